"""R-Drop (Liang et al. 2021): two dropout passes of each batch, pulled together by a symmetric KL.

Both passes run as one forward of the batch stacked twice (dropout draws independent masks per row),
so the step costs one larger forward and one backward. Loss = mean task loss of the two passes
+ α·½(KL(p1||p2) + KL(p2||p1)) over the valid positions (token-level labels -100 are ignored);
α = 0 is the default step on a doubled batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field

from tunelab.methods.losses import model_logits, symmetric_kl, valid_mask
from tunelab.methods.spec import (
    Adapted,
    Backward,
    MethodSpec,
    StepOutput,
    companion_params,
    refuses_without_logits,
    step_only_apply,
)


class Params(BaseModel):
    """Options of the R-Drop method (validated from ``methods[i].params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(1.0, ge=0, description="Weight of the symmetric KL between the two dropout passes.")


def step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """One forward of the doubled batch: task loss on both halves + α·symmetric KL between them."""
    params: Params = companion_params(adapted, "rdrop")
    alpha = params.alpha
    doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
    out = adapted.model(**doubled)
    hard = adapted.loss(out, doubled)
    first, second = model_logits(out).chunk(2)
    consistency = symmetric_kl(first, second, valid_mask(first, batch))
    loss = hard + alpha * consistency
    backward(loss)
    return StepOutput(loss=loss.detach(), metrics={"rdrop_kl": consistency.detach()})


apply = step_only_apply("rdrop")
SPEC = MethodSpec(name="rdrop", params=Params, apply=apply, step=step, refuses=refuses_without_logits)
