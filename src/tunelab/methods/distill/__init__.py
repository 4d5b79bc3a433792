"""Knowledge distillation: a frozen teacher (or an ensemble) guides the run's model, the student.

Loss = α·hard + (1−α)·T²·KL(teacher_T || student_T) + β·MSE(P·h_student, h_teacher) (Hinton et al.
2015; hidden-state matching as in TinyBERT, Jiao et al. 2020). The hard loss is the task's own
(``Adapted.loss``), the KL runs over every valid position, so classification and token
classification (labels -100 ignored) both work. With ``cache_dir`` the teacher's top-k logits are
computed once before training (``cache.py``) and the teacher is then released. The projection P is
part of the student during training (so the optimizer trains it and checkpoints resume it exactly)
but is listed in ``_keys_to_ignore_on_save``: the saved student is a plain model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from tunelab.config import RunConfig
from tunelab.errors import ConfigError
from tunelab.methods.distill import cache, teacher
from tunelab.methods.losses import masked_mean, model_logits, topk_kl, valid_mask
from tunelab.methods.spec import (
    IMAGE_CLASSES,
    SEQ2SEQ_CLASS,
    Adapted,
    Backward,
    MethodSpec,
    RunData,
    StepOutput,
    Target,
    refuses_without_logits,
    unwrap_ddp,
)

logger = logging.getLogger(__name__)

PROJECTION = "distill_projection"  # attribute of the student holding the hidden-state projections


class Params(BaseModel):
    """Distillation settings; teacher paths are read by ``apply`` (a config may name a future run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: list[Path] = Field(
        min_length=1,
        description="Teacher model dir(s) or run dir(s) (their best/); several = ensemble of mean logits.",
    )
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hard (task) loss; 1 - alpha on the KL.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of teacher and student.")
    hidden_layers: list[tuple[int, int]] = Field(
        default_factory=list,
        description="(student, teacher) hidden_states indices to match with MSE (0 = embeddings); [] = off.",
    )
    hidden_weight: float = Field(1.0, ge=0, description="beta, weight of the hidden-state MSE.")
    cache_dir: str | None = Field(
        None, description="Cache the teacher's top-k logits here before training; null = live teacher."
    )
    cache_top_k: int | None = Field(
        None, ge=1, description="Logits kept per example/token in the cache; null = all labels (exact)."
    )

    @field_validator("teacher", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _combinations(self) -> Params:
        if self.hidden_layers and self.cache_dir is not None:
            raise ValueError(
                "hidden_layers needs the live teacher's hidden states; the cache keeps logits only"
            )
        if self.hidden_layers and len(self.teacher) > 1:
            raise ValueError("hidden_layers matches one teacher's hidden states; give a single teacher")
        return self


class Distiller(nn.Module):
    """What the step needs besides the student: frozen teachers (or their cached logits) and the weights."""

    def __init__(self, teachers: list[nn.Module], params: Params, paths: list[Path]) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.params = params
        self.paths = paths
        self.cache: cache.TeacherCache | None = None

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean teacher logits on a batch (the ensemble's)."""
        return teacher.ensemble_logits(list(self.teachers), batch)


def _distiller(adapted: Adapted) -> Distiller:
    """The :class:`Distiller` that :func:`apply` put in ``adapted.companions["distill"]``."""
    return cast(Distiller, adapted.companions["distill"])


class _SavesSelectively(Protocol):
    """A transformers model: ``save_pretrained`` leaves out the state-dict keys listed here."""

    _keys_to_ignore_on_save: set[str] | list[str] | None


def _attach_projection(model: nn.Module, params: Params, teacher_model: nn.Module) -> None:
    """Learned student -> teacher hidden projections, trained with the student but never saved with it."""
    student_config: Any = model.config  # transformers configs: attribute bags, untyped here
    teacher_config: Any = teacher_model.config
    proj = nn.ModuleList(
        nn.Linear(student_config.hidden_size, teacher_config.hidden_size) for _ in params.hidden_layers
    )
    model.add_module(PROJECTION, proj)
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    cast(_SavesSelectively, model)._keys_to_ignore_on_save = ignored | {
        f"{PROJECTION}.{k}" for k in proj.state_dict()
    }


def apply(model: nn.Module, params: Params, head_modules: tuple[str, ...]) -> Adapted:
    """Load and check the teachers; add the hidden projection when hidden_layers is set."""
    paths = [p.expanduser() for p in params.teacher]
    teachers = [teacher.load_teacher(p) for p in paths]
    teacher.check_compatible(teachers, paths, model)
    if params.hidden_layers:
        _attach_projection(model, params, teachers[0])
    return Adapted(model=model, companions={"distill": Distiller(teachers, params, paths)})


def prepare(adapted: Adapted, params: Params, data: RunData) -> None:
    """With ``cache_dir``: load or build the teacher-logit cache of the training rows; drop the teachers."""
    if params.cache_dir is None:
        return
    distiller = _distiller(adapted)
    student_config: Any = adapted.model.config  # a transformers config, untyped here
    top_k: int = params.cache_top_k or student_config.num_labels
    path = cache.cache_path(
        Path(params.cache_dir).expanduser(),
        teacher.fingerprint(distiller.paths, data.digests),
        data.features["input_ids"],
        top_k,
    )
    batches = cache.fixed_batches(data.features, data.collator)
    distiller.cache = cache.load_or_build(path, distiller.teacher_logits, batches, top_k)
    distiller.teachers = nn.ModuleList()


def _hidden_mse(
    student_out: Any, teacher_out: Any, projections: nn.ModuleList, params: Params, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over layer pairs of the per-token MSE between projected student and teacher states."""
    losses = []
    for proj, (s, t) in zip(projections, params.hidden_layers, strict=True):
        diff = proj(student_out.hidden_states[s]) - teacher_out.hidden_states[t].float()  # (B, T, H_t)
        losses.append(masked_mean(diff.pow(2).mean(-1), mask))
    return torch.stack(losses).mean()


def step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """α·hard + (1−α)·T²·KL (+ β·hidden MSE), one backward; α = 1 skips the teacher entirely."""
    distiller = _distiller(adapted)
    p = distiller.params
    device = batch["input_ids"].device
    distiller.to(device)  # the loop moves only the student; a no-op once there
    hidden = bool(p.hidden_layers)
    out = adapted.model(**batch, output_hidden_states=True) if hidden else adapted.model(**batch)
    logits = model_logits(out)
    hard = adapted.loss(out, batch)
    metrics: dict[str, float | torch.Tensor] = {"distill_hard": hard.detach()}
    loss = p.alpha * hard
    if p.alpha < 1 or hidden:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if distiller.cache is not None:
            values, indices = distiller.cache.lookup(batch, token_level=logits.dim() == 3)
        else:
            with torch.no_grad():
                t_outs = [t(**inputs, output_hidden_states=hidden) for t in distiller.teachers]
            values = torch.stack([o.logits.float() for o in t_outs]).mean(0)
            indices = torch.arange(values.shape[-1], device=device).expand_as(values)
        kd = topk_kl(logits, values, indices, p.temperature, valid_mask(logits, batch))
        loss = loss + (1 - p.alpha) * kd
        metrics["distill_kd"] = kd.detach()
        if hidden:
            projections = getattr(unwrap_ddp(adapted.model), PROJECTION)
            if not any(w.requires_grad for w in projections.parameters()):
                raise ConfigError(
                    "methods: the distill projection was frozen by a later method; list distill after "
                    "methods that freeze parameters, e.g. [lora, distill]"
                )
            mse = _hidden_mse(out, t_outs[0], projections, p, batch["attention_mask"].bool())
            loss = loss + p.hidden_weight * mse
            metrics["distill_hidden"] = mse.detach()
    backward(loss)
    return StepOutput(loss=loss.detach(), metrics=metrics)


def refuses(params: Params, target: Target) -> str | None:
    """Refuse tasks whose logits, model class or inputs a teacher cannot serve.

    A teacher gives one logits tensor, loads as a transformers class, and its cache is keyed by token
    ids (image models take pixels). Hidden-state matching also needs one stack of hidden states (not
    an encoder-decoder's two).
    """
    if target.own_architecture:
        return (
            "a teacher loads as the transformers architecture its config.json names, and "
            f"{target.task}'s {target.model_class} is tunelab's own class"
        )
    if target.model_class in IMAGE_CLASSES:
        return "its batches and teacher-logit cache are keyed by token ids, and image models take pixels"
    if params.hidden_layers and target.model_class == SEQ2SEQ_CLASS:
        return (
            "hidden_layers matches one stack of hidden states; an encoder-decoder has two (use logits only)"
        )
    return refuses_without_logits(params, target)


def conflicts(params: Params, cfg: RunConfig) -> list[str]:
    """The teacher-logit cache holds the unaugmented rows, and augmentation changes them every epoch."""
    if params.cache_dir is not None and cfg.data.augment is not None:
        return [
            "params.cache_dir: the teacher cache holds the unaugmented rows, and data.augment changes them "
            "every epoch; set cache_dir: null (live teacher) or turn augmentation off"
        ]
    return []


SPEC = MethodSpec(
    name="distill",
    params=Params,
    apply=apply,
    step=step,
    prepare=prepare,
    refuses=refuses,
    conflicts=conflicts,
)
