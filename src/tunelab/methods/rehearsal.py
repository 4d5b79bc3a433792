"""Rehearsal (experience replay, e.g. Rolnick et al. 2019): a continual run keeps training on old rows.

A buffer of ``buffer_size`` rows of the previous task's training split (``model.previous_run``) is
drawn once, seeded. Every micro-step then adds ``k = round(b · ratio / (1 − ratio))`` buffer rows,
drawn with replacement by a generator of its own (seeded, checkpointed as run state, so a resumed
run draws the same rows), to the ``b`` rows of this task, with their own labels (the previous
task's, in the grown head's columns). The replayed rows run as a second forward (their padding
differs) and the loss is the mean over all ``b + k`` rows, ``(b·L_new + k·L_old) / (b + k)``, with
one backward: the gradient of one mixed batch in which ``ratio`` of the rows are replayed.
Hand-written: the replay sits inside tunelab's one training step and its checkpoints.

With several processes every rank replays the same buffer rows (the draw generator is one run
state, saved once): correct, but the replayed rows per step do not grow with the process count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tunelab.methods.spec import (
    Adapted,
    Backward,
    MethodSpec,
    PreviousTask,
    RunData,
    StepOutput,
    needs_previous_run,
    previous_task,
    refuses_without_continual,
)


class Params(BaseModel):
    """Options of rehearsal (validated from ``methods[i].params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    buffer_size: int = Field(
        1000, gt=0, description="Rows of the previous task's train split kept for replay (all, if fewer)."
    )
    ratio: float = Field(
        0.5, ge=0, lt=1, description="Share of each training micro-batch made of replayed rows."
    )
    seed: int = Field(0, description="Seeds the buffer's rows and the replay draws.")


def replay_count(batch_rows: int, ratio: float) -> int:
    """Replayed rows to add to ``batch_rows`` new rows so that ``ratio`` of the mixed batch is replayed."""
    return round(batch_rows * ratio / (1 - ratio))


class Replay(nn.Module):
    """The buffer (feature rows), its collator and the draw generator: a checkpointed run state."""

    def __init__(self, params: Params) -> None:
        super().__init__()
        self.params = params
        self.rows: list[dict[str, Any]] = []
        self.collator: Any = None
        self.generator = torch.Generator().manual_seed(params.seed)

    def fill(self, previous: PreviousTask) -> None:
        """Keep ``buffer_size`` rows of the previous task's train features."""
        self.rows = previous.train_rows(self.params.buffer_size, self.params.seed)
        self.collator = previous.collator

    def draw(self, k: int) -> dict[str, torch.Tensor]:
        """``k`` buffer rows drawn with replacement, collated into one batch."""
        picks = torch.randint(len(self.rows), (k,), generator=self.generator).tolist()
        return cast(dict[str, torch.Tensor], self.collator([self.rows[i] for i in picks]))

    def run_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The draw generator's state: a resumed run replays the same rows."""
        return {"generator": self.generator.get_state()}

    def restore(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Put the generator back where the checkpoint left it."""
        self.generator.set_state(tensors["generator"])


def _replay(adapted: Adapted) -> Replay:
    return cast(Replay, adapted.companions["rehearsal"])


def apply(model: nn.Module, params: Params, head_modules: tuple[str, ...]) -> Adapted:
    """The model unchanged (trainability as earlier methods set it); the replay buffer as companion."""
    return Adapted(model=model, companions={"rehearsal": Replay(params)})


def prepare(adapted: Adapted, params: Params, data: RunData) -> None:
    """Fill the buffer from the previous task's train split."""
    _replay(adapted).fill(previous_task(adapted, "rehearsal"))


def step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """The new rows' loss and the replayed rows' loss, averaged over all rows, one backward."""
    replay = _replay(adapted)
    b = len(batch["labels"])  # every continual task's batch has labels; an image batch has no input_ids
    k = replay_count(b, replay.params.ratio)
    new = adapted.loss(adapted.model(**batch), batch)
    if k == 0:
        backward(new)
        return StepOutput(loss=new.detach())
    device = batch["labels"].device
    old_batch = {key: value.to(device) for key, value in replay.draw(k).items()}
    old = adapted.loss(adapted.model(**old_batch), old_batch)
    loss = (b * new + k * old) / (b + k)
    backward(loss)
    return StepOutput(
        loss=loss.detach(), metrics={"rehearsal_new": new.detach(), "rehearsal_old": old.detach()}
    )


SPEC = MethodSpec(
    name="rehearsal",
    params=Params,
    apply=apply,
    step=step,
    prepare=prepare,
    refuses=refuses_without_continual,
    conflicts=needs_previous_run("rehearsal", "replays the previous task's training rows"),
)
