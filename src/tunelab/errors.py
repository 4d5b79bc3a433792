"""Exceptions raised at tunelab's boundaries, and the one formatting of pydantic errors into their messages.

Every message says what to do about it; a validation error names each offending key path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


class TunelabError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class ConfigError(TunelabError):
    """A configuration value is invalid; the message names each offending key path."""


class DataError(TunelabError):
    """Input data is unusable; the message names file and line of every bad row."""


class AssetError(TunelabError):
    """A shipped model or dataset cannot be found or prepared."""


class CheckpointError(TunelabError):
    """A checkpoint or saved model directory is missing, incomplete or incompatible."""


class ServingError(TunelabError):
    """The server cannot start as configured (model, keys, exposure); the message says what to change."""


class ExportError(TunelabError):
    """An export was refused: the model cannot take the requested step or failed its parity check."""


def format_loc(loc: tuple[Any, ...]) -> str:
    """``("methods", 0, "params", "r")`` -> ``methods[0].params.r``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the pydantic model that owns the unknown key at ``loc``."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        current = candidates[0]
    return sorted(current.model_fields)


def format_validation_error(error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: ``key.path: message (got value)``, listing valid keys for unknown ones."""
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        key = format_loc(loc) if loc else "(top level)"
        key = f"{prefix}.{key}" if prefix and loc else (prefix or key)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            msg = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
            lines.append(f"{key}: {msg}")
        elif err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}: {msg} (got {err['input']!r})")
    return "\n".join(lines)
