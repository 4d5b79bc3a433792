"""MethodSpec: how an adaptation method changes the model and, at most, one micro-step."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch
from pydantic import BaseModel
from torch import nn

from tunelab.config import RunConfig

Backward = Callable[[torch.Tensor], None]
LossFn = Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor]
ColumnDict = dict[str, list[Any]]  # column name -> values, one per row


def model_loss(outputs: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss: transformers computes it when the batch carries ``labels``."""
    return cast(torch.Tensor, outputs.loss)


@dataclass(frozen=True)
class PreviousTask:
    """The task a continual run (``model.previous_run``) learned before this one, as this run reads it.

    ``labels`` are that task's labels: the first ``len(labels)`` columns of this run's grown head.
    ``params`` are its task params; ``train``, ``dev`` and ``test`` its splits (the ones its run
    saw) as features of this run (this run's tokenizer, label ids in this run's label order), and
    ``examples`` the raw ``dev``/``test`` rows. ``collator`` pads its features into a batch.
    """

    run: Path
    labels: tuple[str, ...]
    params: Any
    train: Any
    dev: Any
    test: Any
    examples: Mapping[str, Any]
    collator: Any

    def train_rows(self, size: int, seed: int) -> list[dict[str, Any]]:
        """``size`` feature rows of the train split (all, if fewer), chosen by ``seed``, in row order."""
        n = len(self.train)
        return [self.train[i] for i in sorted(random.Random(seed).sample(range(n), min(size, n)))]


def previous_task(adapted: Adapted, method: str) -> PreviousTask:
    """The previous task of a continual run; ``plan.resolve`` has refused ``method`` without one."""
    assert adapted.previous is not None, f"{method} needs model.previous_run (checked by its conflicts)"
    return adapted.previous


def needs_previous_run(method: str, uses: str) -> Callable[[Any, RunConfig], list[str]]:
    """A ``conflicts`` hook of a continual-learning method: it ``uses`` the previous run's task."""

    def conflicts(params: Any, cfg: RunConfig) -> list[str]:
        if cfg.model.previous_run is None:
            return [f"name: {method} {uses}; name that run with model.previous_run"]
        return []

    return conflicts


def refuses_previous_run(method: str, why: str) -> Callable[[Any, RunConfig], list[str]]:
    """A ``conflicts`` hook of a method that cannot continue a previous run (``model.previous_run``)."""

    def conflicts(params: Any, cfg: RunConfig) -> list[str]:
        return [f"name: {method} {why}"] if cfg.model.previous_run is not None else []

    return conflicts


def refuses_without_continual(params: Any, target: Target) -> str | None:
    """For continual-learning methods: the task must be able to continue a previous run."""
    return target.why_no_continual


@dataclass
class Adapted:
    """The trainable model, frozen companions a method needs (e.g. a distillation teacher), and the loss.

    ``loss(outputs, batch)`` is the task's supervised loss (e.g. class-weighted cross-entropy); every
    method's step computes its hard loss through it, so a task's loss applies under any method.
    ``previous`` is the task a continual run learned before (``model.previous_run``), else None.
    ``lr_scale`` (parameter name -> learning-rate multiplier, e.g. layer-wise decay) and ``lr_start``
    (parameter name -> first optimizer step at which it learns, e.g. head-first schedules) are how a
    method shapes the optimizer's parameter groups; parameters not named keep scale 1 and start 0.
    """

    model: nn.Module
    companions: dict[str, nn.Module] = field(default_factory=dict)
    loss: LossFn = model_loss
    lr_scale: Mapping[str, float] = field(default_factory=dict)
    lr_start: Mapping[str, int] = field(default_factory=dict)
    previous: PreviousTask | None = None


@runtime_checkable
class RunState(Protocol):
    """Training state a method keeps outside the weights and the optimizer (e.g. AdaLoRA's importances).

    A companion implementing it is written into every checkpoint (safetensors) and restored on resume,
    so a resumed run continues exactly; both calls get the unwrapped trained model.
    """

    def run_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors to checkpoint: name -> contiguous tensor (written with safetensors)."""

    def restore(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Put back the tensors :meth:`run_state` returned (as read from the checkpoint), in place."""


class ParamsCompanion(nn.Module):
    """A method's params kept in ``Adapted.companions``: the loop passes a step nothing but the batch."""

    def __init__(self, params: Any) -> None:
        super().__init__()
        self.params = params


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (several processes), else ``model``.

    Methods read parameter names, state dicts and attributes of the model itself; DDP would prefix
    them with ``module.`` and hide the attributes.
    """
    return cast(nn.Module, getattr(model, "module", model))


def companion_params(adapted: Adapted, key: str) -> Any:
    """The params a step-only method keeps as companion ``key`` (see :func:`step_only_apply`).

    ``Adapted.companions`` is typed as plain modules; this is where a step reads its own params back.
    """
    return cast(ParamsCompanion, adapted.companions[key]).params


def step_only_apply(key: str) -> Callable[[nn.Module, Any, tuple[str, ...]], Adapted]:
    """``apply`` of a method that changes only the step.

    Trainability stays as earlier methods set it (e.g. LoRA); the params ride along as companion ``key``.
    """

    def apply(model: nn.Module, params: Any, head_modules: tuple[str, ...]) -> Adapted:
        return Adapted(model=model, companions={key: ParamsCompanion(params)})

    return apply


@dataclass(frozen=True)
class RunData:
    """What ``MethodSpec.prepare`` sees of the run's data besides the model.

    ``features`` is the training split, tokenised and unpadded (a ``datasets.Dataset``), and ``collator``
    pads a list of its rows into a batch. ``seed`` is ``train.seed``. ``read_inputs(path)`` reads a file
    in the run's data format through the task's reader, keeping the input columns (``text``, and
    ``text_pair`` when the run has one; a label column is ignored), every bad row reported as file:line;
    ``tokenize(columns)`` turns such columns into unpadded features exactly as training rows are
    tokenised, without labels. The training setup always gives all five; tests of a method that reads
    only the training features may leave the last two out. ``digests`` maps the absolute path of
    every file and model the run hashed for its record (``models.manifest.data_files``) to its sha256,
    so a method that keys a cache on a teacher's content need not hash it again.
    """

    features: Any
    collator: Any
    seed: int = 0
    read_inputs: Callable[[Path], ColumnDict] | None = None
    tokenize: Callable[[ColumnDict], ColumnDict] | None = None
    digests: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepOutput:
    """Loss of one micro-batch (already back-propagated) and extra scalars to log.

    Metrics may stay tensors: the loop reads them back only when it logs.
    """

    loss: torch.Tensor
    metrics: Mapping[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerStepContext:
    """What the loop tells ``MethodSpec.on_optimizer_step`` after each optimizer step.

    The step's gradients are still in ``.grad`` (the loop zeroes them after the hooks), so
    gradient-based schedules such as AdaLoRA's importance scores can read them.

    ``all_reduce_sum`` sums a tensor over all ranks (identity on one process), so methods can act on
    the global batch without importing accelerate.
    """

    step: int
    total_steps: int
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]


def default_step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """Plain supervised step: the task's loss, one backward."""
    loss = adapted.loss(adapted.model(**batch), batch)
    backward(loss)
    return StepOutput(loss=loss.detach())


StepFn = Callable[[Adapted, Mapping[str, torch.Tensor], Backward], StepOutput]


@dataclass(frozen=True)
class Target:
    """What a method will be applied to, known before any weight loads (for refusals at validation).

    ``model_class`` is the task's model class name (e.g. ``AutoModelForSequenceClassification``);
    ``restructuring`` names the configured methods that change the module structure
    (``MethodSpec.rebuild``), so a method can refuse such a neighbour.
    ``why_no_logits``, ``own_architecture`` and ``block_mask`` are the task's capabilities
    (``TaskSpec``); ``block_mask`` is already evaluated on the run's task params.
    ``why_no_continual`` says why a run of the task cannot continue a previous run (None: it can).
    """

    task: str
    model_class: str
    restructuring: tuple[str, ...] = ()
    why_no_logits: str | None = None
    own_architecture: bool = False
    block_mask: str | None = None
    why_no_continual: str | None = None


SEQ2SEQ_CLASS = "AutoModelForSeq2SeqLM"  # encoder-decoders: embeddings and hidden states split in two
# vision transformers: patches, not token embeddings, and transformers' own MLP block (no BERT/Llama FFN)
IMAGE_CLASSES = ("AutoModelForImageClassification", "AutoModelForMaskedImageModeling")


def refuses_without_logits(params: Any, target: Target) -> str | None:
    """For methods that compare one logits tensor per batch (soft targets, two-pass KL)."""
    if target.why_no_logits is not None:
        return f"it compares one logits tensor per batch, and for task {target.task!r} {target.why_no_logits}"
    return None


def refuses_block_mask(needs: str, target: Target) -> str | None:
    """For methods that ``needs`` a 2D padding mask (``Target.block_mask``)."""
    if target.block_mask is not None:
        return f"it {needs}, and for task {target.task!r} {target.block_mask}"
    return None


@dataclass(frozen=True)
class MethodSpec:
    """An adaptation method as plain functions.

    ``apply(model, params, head_modules)`` returns the Adapted model; ``step`` owns one micro-batch's
    forward and backward (the loop owns accumulation, clipping and optimizer steps).
    ``on_optimizer_step(adapted, params, ctx)``, if set, runs on every rank right after each optimizer
    step and returns scalars to log (e.g. MoE's aux-free bias update). ``rebuild(model, params)``, if
    set, re-creates the method's module structure on a model built from its config, so a saved state
    dict of a structurally changed model loads without remote code. Methods sharing a ``group`` exclude
    each other (e.g. ``"trainable"``: full, freeze and the PEFT methods each decide which parameters
    train). ``refuses(params, target)`` returns why the method cannot serve ``target``, or None;
    ``training.plan.resolve`` reports it before any weight loads. ``prepare(adapted, params, data)``, if
    set, runs once after the training split is tokenised and before the first step, with the run's
    :class:`RunData` (e.g. distillation's offline teacher-logit cache, self-training's unlabelled
    rows). ``conflicts(params, cfg)`` lists what the method cannot take from the rest of the run config,
    each as ``params.key: why`` (e.g. a teacher-logit cache beside data augmentation).
    ``report(model, dev_batches, model_dir)``, if set, writes the method's own health report of the best
    model beside its metrics and returns its sections for ``metrics.json`` (e.g. MoE's router load per
    expert).
    """

    name: str
    params: type[BaseModel]
    apply: Callable[[nn.Module, Any, tuple[str, ...]], Adapted]
    step: StepFn = default_step
    on_optimizer_step: Callable[[Adapted, Any, OptimizerStepContext], Mapping[str, float]] | None = None
    rebuild: Callable[[nn.Module, Any], nn.Module] | None = None
    group: str | None = None
    refuses: Callable[[Any, Target], str | None] | None = None
    prepare: Callable[[Adapted, Any, RunData], None] | None = None
    conflicts: Callable[[Any, RunConfig], list[str]] | None = None
    report: Callable[[nn.Module, Iterable[Mapping[str, torch.Tensor]], Path], dict[str, Any]] | None = None
