"""Self-training with pseudo-labels: a frozen teacher labels unlabelled text for the model (the student).

Each micro-step is the task's loss on the labelled batch plus ``weight`` x the student's loss on an
unlabelled batch against the teacher's predictions (FixMatch, Sohn et al. 2020; Noisy Student, Xie et
al. 2020): hard ones (cross-entropy to the argmax) or, with ``temperature``, soft ones (T² x KL to the
teacher's tempered distribution, distill's ``topk_kl``; self-distillation, Furlanello et al. 2018). The
student sees the text with dropout and, with ``consistency``, an EDA-edited view of it (``data.augment``'s
edits); the teacher runs without dropout on the clean text.

Two teachers. ``teacher_run``: a finished run's dev-selected ``best/``, loaded and checked as ``distill``
loads its teacher, fixed for the whole run: it scores every unlabelled row once before training into
distill's teacher-logit cache (in memory, every class) and is then released, so a row drawn again
costs no teacher forward; the student starts afresh (e.g. from the pretrained model)
and a second round is another run whose teacher_run is this one. Without it the teacher is the model
itself, copied when the warm start ends and refreshed each of ``rounds`` (or every ``refresh_every``
steps). The recipe that pays is the first (measured below); the second stays because it is the one that
needs no earlier run (issue 22 asks for "teacher = the current model, rounds"), and because its
measured shortfall is the reason for the first: a model that just fitted 200 rows is an over-confident
labeller (bench/probe_self_train.py: 84% of the pool above 0.9 at 73% accuracy). Its docs say so.

Why this shape: the loop hands a method one labelled micro-batch and owns accumulation, so the
unlabelled rows ride along inside the step (``ratio`` of them per labelled row) instead of in a second
data loader; their order is a pure function of (seed, unlabelled epoch) and their position, a model
teacher's weights and whether pseudo-labelling has started are :class:`~tunelab.methods.spec.RunState`,
so a resumed run draws the same rows from the same teacher (a ``teacher_run`` is read again from disk
and scores the pool in the cache's fixed batches, whatever the training order).
Pseudo-label losses are summed over the kept rows and divided by all rows of the unlabelled batch
(FixMatch's normalisation) and carry no class weights or label smoothing (those stay on the labelled
loss). A row counts when the teacher's probability exceeds ``threshold`` and, with ``class_fraction``,
when it is among the ``ceil(class_fraction x rows / classes)`` most confident rows of its predicted class
in the batch (FlexMatch-style balance); multi-label heads decide per (row, label). Written by hand: no
library in the stack trains with pseudo-labels inside a custom step.

Measured (bench/RESULTS.md, "Self-training": RT, MiniLM, 200 labelled + 3,000 unlabelled rows, 1,000
test rows, seeds 1 / 2): supervised 0.718 / 0.713; teacher_run = that run's dev-best best/, temperature 2,
threshold 0: 0.720 / 0.721, at or above it on each seed but within 1,000 test rows' sampling error (~1.4
points); a second round (teacher = that student) 0.693 / 0.728. The model as its own teacher stayed below
it (threshold 0.9, rounds 3: 0.701; class quotas 0.5 / 0.1: 0.689 / 0.702 mean). The hard,
0.9-threshold defaults are that mode's; the example sets the fixed-teacher ones.

With several processes every rank draws the same unlabelled rows (each rank's labelled rows differ):
correct, but the unlabelled rows per step do not grow with the process count.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from tunelab.config import AugmentConfig
from tunelab.data.augment import AugmentingCollator, load_synonyms
from tunelab.errors import DataError
from tunelab.methods.distill import cache
from tunelab.methods.distill import teacher as teachers
from tunelab.methods.losses import model_logits
from tunelab.methods.self_train.labels import pseudo_label_loss, pseudo_labels, soft_pseudo_label_loss
from tunelab.methods.spec import (
    Adapted,
    Backward,
    MethodSpec,
    OptimizerStepContext,
    ParamsCompanion,
    RunData,
    StepOutput,
    Target,
    unwrap_ddp,
)

logger = logging.getLogger(__name__)

SEQUENCE_CLASSIFICATION = "AutoModelForSequenceClassification"  # one class distribution per text
TEACHER = "teacher."  # run-state key prefix of the teacher's tensors
TEACHER_RUN = "methods.self_train.params.teacher_run"


class Params(BaseModel):
    """Options of self-training (validated from ``methods[i].params``).

    With ``teacher_run`` the teacher is that finished run's dev-selected model, fixed for the whole run.
    Without it the teacher is the model itself: first taken when ``warm_start`` of the optimizer steps
    are done, then refreshed at the start of each of ``rounds`` equal rounds of the remaining steps, or
    every ``refresh_every`` steps; neither set means one round (the teacher stays the warm-started model).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unlabeled_file: Path = Field(
        description="Unlabelled texts in the run's data format (its text column(s); a label column is "
        "ignored), or a .txt file of one text per line.",
    )
    threshold: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Keep a pseudo-label when the teacher's probability exceeds this; 1 keeps none.",
    )
    class_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Class-balanced selection: of each unlabelled batch, each predicted class keeps at most "
        "ceil(class_fraction x rows / classes) rows above the threshold, the most confident first; "
        "null: every row above the threshold.",
    )
    teacher_run: Path | None = Field(
        None,
        description="A finished run dir (its dev-selected best/) or a model dir: the fixed teacher, loaded "
        "as distill loads one, scores the unlabelled rows once before training; pseudo-labelling starts "
        "at step 0. null: the model is its own teacher (warm_start, rounds).",
    )
    temperature: float | None = Field(
        None,
        gt=0,
        description="Soft pseudo-labels: T^2 x KL(teacher_T || student_T) on the kept rows (multi-label: "
        "binary, per label); null: hard ones (cross-entropy to the teacher's argmax).",
    )
    weight: float = Field(1.0, ge=0, description="Weight of the pseudo-label loss beside the labelled loss.")
    ratio: int = Field(2, ge=1, description="Unlabelled rows per labelled row in each micro-batch.")
    warm_start: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Without teacher_run: fraction of the optimizer steps trained on labelled rows only; "
        "the first teacher is the model at its end (0: the starting model, e.g. an already fine-tuned one).",
    )
    rounds: int | None = Field(
        None, ge=1, description="Teacher refreshes: the steps after the warm start split into this many."
    )
    refresh_every: int | None = Field(
        None, ge=1, description="Teacher refreshes: every this many optimizer steps after the warm start."
    )
    consistency: AugmentConfig | None = Field(
        None,
        description="The student sees EDA-edited unlabelled text (data.augment's options) while the teacher "
        "labels the clean text; null: both see the same text.",
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> Params:
        if self.rounds is not None and self.refresh_every is not None:
            raise ValueError("set rounds or refresh_every (two teacher schedules), not both")
        if self.teacher_run is not None:
            schedule = [k for k in ("warm_start", "rounds", "refresh_every") if k in self.model_fields_set]
            if schedule:
                raise ValueError(
                    f"teacher_run is a fixed teacher, used from the first step: drop {', '.join(schedule)} "
                    "(for another round, train again with teacher_run = this run)"
                )
        return self


def first_step(params: Params, total_steps: int) -> int:
    """Optimizer steps done when pseudo-labelling starts (the warm start's end; 0 with teacher_run)."""
    return 0 if params.teacher_run is not None else math.ceil(params.warm_start * total_steps)


def refresh_due(params: Params, step: int, total_steps: int) -> bool:
    """Whether the teacher becomes a copy of the model after optimizer step ``step``.

    Step 0 (before training) is the copy :func:`prepare` takes; a ``teacher_run`` is never replaced.
    """
    start = first_step(params, total_steps)
    if params.teacher_run is not None or step < start:
        return False
    if params.refresh_every is not None:
        return (step - start) % params.refresh_every == 0
    rounds = params.rounds or 1
    return any(step == start + (total_steps - start) * k // rounds for k in range(rounds))


class SelfTrainer(ParamsCompanion):
    """The teacher, the unlabelled rows and the run state that makes a resume exact.

    ``position`` holds (unlabelled epoch, next row of its order); it is a buffer, so the trial steps of
    the automatic batch size put it back. The rows arrive in :func:`prepare`, and with them a fixed
    teacher's ``cache`` of their logits (the teacher itself is then dropped).
    """

    position: torch.Tensor

    def __init__(self, params: Params, teacher: nn.Module | None = None) -> None:
        super().__init__(params)
        self.started = first_step(params, 1) == 0
        self.register_buffer("position", torch.zeros(2, dtype=torch.long), persistent=False)
        self.teacher = teacher
        self.cache: cache.TeacherCache | None = None
        self.inputs: dict[str, list[Any]] = {}
        self.features: list[dict[str, Any]] = []
        self.collator: Any = None
        self.student_view: AugmentingCollator | None = None
        self.seed = 0
        self._order: tuple[int, list[int]] = (-1, [])

    def refresh(self, model: nn.Module) -> None:
        """The teacher takes the model's current weights."""
        assert self.teacher is not None, "prepare() builds the teacher"
        self.teacher.load_state_dict(unwrap_ddp(model).state_dict())

    def order(self, epoch: int) -> list[int]:
        """The unlabelled rows of ``epoch`` in their seeded order (its own stream, not the labelled one)."""
        if self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, len(self.features)])
            self._order = (epoch, rng.permutation(len(self.features)).tolist())
        return self._order[1]

    def next_rows(self, n: int) -> list[int]:
        """The next ``n`` unlabelled rows (fewer at an epoch's end), advancing ``position``."""
        epoch, offset = (int(v) for v in self.position.tolist())
        order = self.order(epoch)
        rows = order[offset : offset + n]
        offset += len(rows)
        if offset >= len(order):
            epoch, offset = epoch + 1, 0
        self.position.copy_(torch.tensor([epoch, offset]))
        return rows

    def batches(self, rows: list[int], device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
        """The teacher's (clean) and the student's view of ``rows``, collated as training batches."""
        clean = self.collator([self.features[i] for i in rows])
        view = clean
        if self.student_view is not None:
            view = self.student_view(
                [{"row": i, **{name: column[i] for name, column in self.inputs.items()}} for i in rows]
            )
        return {k: v.to(device) for k, v in clean.items()}, {k: v.to(device) for k, v in view.items()}

    def run_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Position, started flag, the teacher's trained parameters and buffers (frozen ones: the model's).

        A ``teacher_run`` never changes (it is loaded again on resume), so it is not saved.
        """
        state = {"position": self.position.cpu().clone(), "started": torch.tensor([self.started])}
        if cast(Params, self.params).teacher_run is not None:
            return state
        assert self.teacher is not None, "prepare() builds the teacher"
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        trained |= {name for name, _ in self.teacher.named_buffers()}
        teacher = {
            TEACHER + name: t.detach().cpu().contiguous().clone()
            for name, t in self.teacher.state_dict().items()
            if name in trained
        }
        return state | teacher

    def restore(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Put back what :meth:`run_state` saved (the teacher's other weights equal the starting model's)."""
        self.position.copy_(tensors["position"])
        self.started = bool(tensors["started"].item())
        teacher = {k[len(TEACHER) :]: v for k, v in tensors.items() if k.startswith(TEACHER)}
        if not teacher:  # a teacher_run: its cache was built again from disk
            return
        assert self.teacher is not None, "prepare() builds the teacher"
        unexpected = self.teacher.load_state_dict(teacher, strict=False).unexpected_keys
        assert not unexpected, f"teacher state holds unknown tensors: {unexpected[:5]}"


def _trainer(adapted: Adapted) -> SelfTrainer:
    return cast(SelfTrainer, adapted.companions["self_train"])


def apply(model: nn.Module, params: Params, head_modules: tuple[str, ...]) -> Adapted:
    """Load and check a ``teacher_run``; trainability stays as earlier methods set it (e.g. LoRA)."""
    fixed = None
    if params.teacher_run is not None:
        path = params.teacher_run.expanduser()
        fixed = teachers.load_teacher(path, TEACHER_RUN)
        teachers.check_compatible([fixed], [path], model, TEACHER_RUN)
    return Adapted(model=model, companions={"self_train": SelfTrainer(params, fixed)})


def prepare(adapted: Adapted, params: Params, data: RunData) -> None:
    """Read and tokenise the unlabelled rows; cache a teacher_run's logits of them, else copy the model.

    The teacher_run scores the rows once, in the cache's fixed batches, and is then released; without
    one the teacher is a frozen copy of the model, run live (it changes with each refresh).
    """
    assert data.read_inputs is not None, "the training setup gives it"
    assert data.tokenize is not None, "the training setup gives it"
    trainer = _trainer(adapted)
    inputs = data.read_inputs(params.unlabeled_file)
    if not inputs["text"]:
        raise DataError(f"{params.unlabeled_file}: no rows (methods.self_train.params.unlabeled_file)")
    features = data.tokenize(inputs)
    trainer.features = [
        dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)
    ]
    assert len(trainer.features) == len(inputs["text"]), "one feature per unlabelled text"
    trainer.inputs, trainer.collator, trainer.seed = inputs, data.collator, data.seed
    if params.consistency is not None:
        path = params.consistency.synonyms_file
        synonyms = load_synonyms(path) if path is not None else {}
        trainer.student_view = AugmentingCollator(
            data.collator, data.tokenize, params.consistency, data.seed, synonyms
        )
    if params.teacher_run is None:
        trainer.teacher = copy.deepcopy(unwrap_ddp(adapted.model)).eval().requires_grad_(False)
    else:
        assert trainer.teacher is not None, "apply() loads the teacher_run"
        config: Any = trainer.teacher.config  # a transformers config, untyped here
        batches = cache.fixed_batches(trainer.features, data.collator)
        logits = partial(teachers.ensemble_logits, [trainer.teacher])
        trainer.cache = cache.TeacherCache(cache.build_cache(logits, batches, config.num_labels))
        trainer.teacher = None
    logger.info("self_train: %d unlabelled rows from %s", len(trainer.features), params.unlabeled_file)


def step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """Labelled loss, then (once started) + weight x the student's loss on the kept pseudo-labels.

    The labelled forward runs first and the teacher runs without dropout (a teacher_run's logits come
    from its cache), so with nothing kept the step's loss and gradients are exactly the default step's.
    """
    trainer = _trainer(adapted)
    params = cast(Params, trainer.params)
    out = adapted.model(**batch)
    loss = adapted.loss(out, batch)
    if not trainer.started:
        backward(loss)
        return StepOutput(loss=loss.detach())
    device = batch["input_ids"].device
    trainer.to(device)  # the loop moves only the student; a no-op once there
    labelled_loss = loss
    logits = model_logits(out)
    multi_label = batch["labels"].shape == logits.shape
    clean, view = trainer.batches(trainer.next_rows(params.ratio * len(batch["input_ids"])), device)
    if trainer.cache is not None:
        teacher_logits = trainer.cache.dense_logits(clean, logits.shape[-1])
    else:
        assert trainer.teacher is not None, "prepare() builds the teacher"
        with torch.no_grad():
            teacher_logits = model_logits(trainer.teacher(**clean))
    targets, keep = pseudo_labels(teacher_logits, params.threshold, multi_label, params.class_fraction)
    unlabelled_loss = torch.zeros((), device=device)
    if keep.any():
        student = model_logits(adapted.model(**view))
        if params.temperature is None:
            unlabelled_loss = pseudo_label_loss(student, targets, keep)
        else:
            unlabelled_loss = soft_pseudo_label_loss(student, teacher_logits, keep, params.temperature)
        loss = loss + params.weight * unlabelled_loss
    backward(loss)
    metrics = {
        "self_train_labelled": labelled_loss.detach(),
        "self_train_unlabelled": unlabelled_loss.detach(),
        "self_train_kept": keep.float().mean(),
    }
    return StepOutput(loss=loss.detach(), metrics=metrics)


def on_optimizer_step(adapted: Adapted, params: Params, ctx: OptimizerStepContext) -> Mapping[str, float]:
    """Start pseudo-labelling when the warm start ends; refresh the teacher on its schedule."""
    trainer = _trainer(adapted)
    if refresh_due(params, ctx.step, ctx.total_steps):
        trainer.refresh(adapted.model)
        logger.info("self_train: teacher refreshed after step %d", ctx.step)
    trainer.started = ctx.step >= first_step(params, ctx.total_steps)
    return {}


def refuses(params: Params, target: Target) -> str | None:
    """Pseudo-labels are one class distribution per text: a sequence-classification head's logits."""
    if target.model_class != SEQUENCE_CLASSIFICATION:
        return (
            f"it pseudo-labels each text with one class distribution (a {SEQUENCE_CLASSIFICATION} head), "
            f"and this task's model is {target.model_class}"
        )
    return None


SPEC = MethodSpec(
    name="self_train",
    params=Params,
    apply=apply,
    step=step,
    prepare=prepare,
    on_optimizer_step=on_optimizer_step,
    refuses=refuses,
)
