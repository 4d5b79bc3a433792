"""Teachers for distillation: saved Hugging Face model directories, frozen, checked against the student.

Methods sit below ``inference`` in the layer order, so a teacher is read as what every full tunelab
artifact is underneath: an HF directory (a run's ``best/`` or an export) whose ``config.json`` names
its architecture (``models.load.load_by_architecture``). Adapter artifacts must be merged first
(``tunelab export --merge``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.errors import CheckpointError, ConfigError
from tunelab.models.load import load_by_architecture
from tunelab.models.manifest import content_digest


def teacher_dir(path: Path, key: str = "methods.distill.params.teacher") -> Path:
    """A model directory, or a run directory whose ``best/`` holds the model (``key`` names the param)."""
    for candidate in (path, path / "best"):
        if (candidate / "config.json").is_file():
            return candidate
        if (candidate / "adapter_config.json").is_file():
            raise CheckpointError(
                f"{candidate}: an adapter artifact; merge it into a full model first "
                "(tunelab export DIR --to OUT --merge) and use OUT as the teacher"
            )
    if not path.is_dir():
        raise CheckpointError(f"{path}: teacher directory not found ({key})")
    raise CheckpointError(f"{path}: no config.json (nor best/config.json); give a run dir or a model dir")


def load_teacher(path: Path, key: str = "methods.distill.params.teacher") -> nn.Module:
    """The frozen, eval-mode model saved in ``path`` (safetensors only, never remote code)."""
    model = load_by_architecture(teacher_dir(path, key))
    model.requires_grad_(False)
    return model


def id2label(config: Any) -> list[str]:
    """Label names in id order from a transformers config."""
    return [config.id2label[i] for i in range(config.num_labels)]


def check_compatible(
    teachers: Sequence[nn.Module],
    paths: Sequence[Path],
    student: nn.Module,
    key: str = "methods.distill.params.teacher",
) -> None:
    """Refuse teachers whose labels or vocabulary differ from the student's, naming what differs.

    The KL compares label i of the teacher with label i of the student, and the teacher reads the
    student's input ids: both must mean the same thing.
    """
    student_config: Any = student.config  # transformers configs: attribute bags, untyped here
    for teacher, path in zip(teachers, paths, strict=True):
        teacher_config: Any = teacher.config
        theirs, ours = id2label(teacher_config), id2label(student_config)
        if theirs != ours:
            raise ConfigError(
                f"{key}: {path} has labels {theirs} but the student has {ours}; "
                "a teacher must be trained on the same labels in the same order (set task.params.labels)"
            )
        if teacher_config.vocab_size != student_config.vocab_size:
            raise ConfigError(
                f"{key}: {path} has a vocabulary of {teacher_config.vocab_size} "
                f"tokens, the student {student_config.vocab_size}; teacher and student must share a tokenizer"
            )


def fingerprint(paths: Sequence[Path], known: Mapping[str, str] | None = None) -> str:
    """SHA-256 over each teacher's config and weights, hashed as the run record hashes a teacher.

    ``known`` maps a model directory's absolute path to the digest the run already took of it
    (``RunData.digests``): a teacher's weights are read for hashing once per run, not twice.
    """
    known = known or {}
    dirs = [teacher_dir(path).resolve() for path in paths]
    digests = [known.get(str(d)) or content_digest(d).sha256 for d in dirs]
    return hashlib.sha256(":".join(digests).encode()).hexdigest()


def ensemble_logits(teachers: Sequence[nn.Module], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean logits of the teachers on the batch (labels dropped: teachers need no loss)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return torch.stack([t(**inputs).logits.float() for t in teachers]).mean(0)
