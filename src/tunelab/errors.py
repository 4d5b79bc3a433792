"""Exceptions raised at tunelab's boundaries; every message says what to do about it."""

from __future__ import annotations


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
