"""An app's ``*_app.yaml`` settings: one reader and one check of the runs they name, so errors read alike."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from tunelab.errors import ConfigError, format_validation_error
from tunelab.inference.artifact import Artifact
from tunelab.io import read_yaml
from tunelab.tasks.classification.schema import ClassificationResponse

Settings = TypeVar("Settings", bound=BaseModel)


def load_app_settings(path: Path, model: type[Settings], what: str) -> Settings:
    """Validate ``path`` as ``model``; all problems at once in one ConfigError, each naming its key.

    ``what`` names the file in messages ("monitor settings"). Relative paths inside stay relative to
    the working directory (the recipes' commands run from the repository root, where ``runs/`` is).
    """
    raw = read_yaml(path, what) or {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid {what}:\n" + format_validation_error(exc, model)) from None


def classification_run(art: Artifact, key: str) -> Artifact:
    """``art`` if it predicts label probabilities (a classification run), else a ConfigError naming ``key``.

    Read from the task's declared response, so nothing is predicted to find out.
    """
    schema = art.task.serve_schema
    if schema is None or schema.response is not ClassificationResponse or not art.labels:
        raise ConfigError(
            f"{key}: {art.path} ({art.task.name}) predicts no label probabilities; name a classification run"
        )
    return art
