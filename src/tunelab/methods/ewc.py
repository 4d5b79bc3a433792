"""Elastic weight consolidation (Kirkpatrick et al. 2017): keep the weights the previous task relied on.

Before the first step, at the previous task's weights θ_A (the continual run's start), the diagonal
Fisher information F of the previous task's loss is estimated on ``fisher_samples`` of its training
rows (seeded). Every step then adds ``strength/2 · Σ F·(θ − θ_A)²`` to the task loss, so parameters
that mattered for A move little and the rest learn B freely.

The previous task's loss is the cross-entropy over its own label columns of the grown head (what its
task-aware accuracy reads), so the new labels' rows get no Fisher. The Fisher is estimated per
mini-batch: the squared gradient of the batch's mean loss, times the batch size, averaged over the
batches. At A's optimum the per-row gradients average to about zero, so this estimates the mean
squared per-row gradient (the empirical Fisher); ``fisher_batch_size: 1`` computes it exactly.
F and θ_A are a checkpointed run state, so a resumed run penalises exactly as the original.
Hand-written: the penalty sits inside tunelab's one training step and its checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tunelab.methods.spec import (
    Adapted,
    Backward,
    MethodSpec,
    RunData,
    StepOutput,
    needs_previous_run,
    previous_task,
    refuses_without_continual,
    unwrap_ddp,
)


class Params(BaseModel):
    """Options of EWC (validated from ``methods[i].params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strength: float = Field(10000.0, ge=0, description="lambda: weight of the penalty lambda/2·ΣF(θ−θ_A)².")
    fisher_samples: int = Field(
        500, gt=0, description="Previous-task train rows the Fisher is estimated on (all, if fewer)."
    )
    fisher_batch_size: int = Field(16, gt=0, description="Rows per Fisher mini-batch; 1 = exact per row.")
    seed: int = Field(0, description="Seeds which previous-task rows estimate the Fisher.")


class Consolidation(nn.Module):
    """θ_A and F per trainable parameter name, and the params (the penalty moves them to the weights)."""

    def __init__(self, params: Params) -> None:
        super().__init__()
        self.params = params
        self.anchor: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``strength/2 · Σ F·(θ − θ_A)²`` over the anchored parameters of ``model``."""
        named = dict(unwrap_ddp(model).named_parameters())
        terms = [
            (self.fisher[name].to(p.device) * (p - self.anchor[name].to(p.device)).pow(2)).sum()
            for name, p in named.items()
            if name in self.anchor
        ]
        return self.params.strength / 2 * torch.stack(terms).sum()

    def run_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """F and θ_A, keyed ``fisher.<param>`` / ``anchor.<param>``."""
        return {
            **{f"fisher.{k}": v.contiguous() for k, v in self.fisher.items()},
            **{f"anchor.{k}": v.contiguous() for k, v in self.anchor.items()},
        }

    def restore(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Put F and θ_A back from a checkpoint."""
        self.fisher = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
        self.anchor = {k.removeprefix("anchor."): v for k, v in tensors.items() if k.startswith("anchor.")}


def _consolidation(adapted: Adapted) -> Consolidation:
    return cast(Consolidation, adapted.companions["ewc"])


def restricted_loss(logits: torch.Tensor, labels: torch.Tensor, n_labels: int) -> torch.Tensor:
    """Mean cross-entropy over the first ``n_labels`` columns (the previous task's labels)."""
    return F.cross_entropy(logits[..., :n_labels].float(), labels)


def diagonal_fisher(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], n_labels: int
) -> dict[str, torch.Tensor]:
    """Mean over ``batches`` of (∇ mean batch loss)² · batch size, per trainable parameter (eval mode)."""
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in named.items()}
    was_training = model.training
    model.eval()  # dropout off: the Fisher of the model as it predicts
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        model.zero_grad(set_to_none=True)
        loss = restricted_loss(model(**inputs).logits, batch["labels"], n_labels)
        torch.autograd.backward(loss)
        for name, p in named.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach().pow(2) * len(batch["labels"]) / len(batches)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return fisher


def apply(model: nn.Module, params: Params, head_modules: tuple[str, ...]) -> Adapted:
    """The model unchanged; F and θ_A are filled in by :func:`prepare`."""
    return Adapted(model=model, companions={"ewc": Consolidation(params)})


def prepare(adapted: Adapted, params: Params, data: RunData) -> None:
    """Anchor θ_A (the weights now, before the first step) and estimate F on the previous task's rows."""
    previous = previous_task(adapted, "ewc")
    rows = previous.train_rows(params.fisher_samples, params.seed)
    size = params.fisher_batch_size
    batches = [previous.collator(rows[start : start + size]) for start in range(0, len(rows), size)]
    model = unwrap_ddp(adapted.model)
    device = next(model.parameters()).device
    batches = [{k: v.to(device) for k, v in batch.items()} for batch in batches]
    state = _consolidation(adapted)
    state.fisher = diagonal_fisher(model, batches, len(previous.labels))
    state.anchor = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """The task loss plus the EWC penalty, one backward."""
    task_loss = adapted.loss(adapted.model(**batch), batch)
    penalty = _consolidation(adapted).penalty(adapted.model)
    loss = task_loss + penalty
    backward(loss)
    return StepOutput(loss=loss.detach(), metrics={"ewc_penalty": penalty.detach()})


SPEC = MethodSpec(
    name="ewc",
    params=Params,
    apply=apply,
    step=step,
    prepare=prepare,
    refuses=refuses_without_continual,
    conflicts=needs_previous_run("ewc", "anchors the weights the previous task relied on"),
)
