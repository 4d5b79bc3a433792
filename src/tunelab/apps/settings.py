"""Reading an app's ``*_app.yaml`` settings file: one reader for every app, so errors read alike."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from tunelab.errors import ConfigError, format_validation_error
from tunelab.io import read_yaml

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
