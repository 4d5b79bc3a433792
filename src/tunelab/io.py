"""Safe file I/O: atomic writes and directories, weights-only loading.

This is the only module that calls ``torch.load``; everything that writes outputs goes through
``atomic_write``/``atomic_dir`` so a crash never leaves a half-written file or model directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.errors import CheckpointError


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temp file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_path(path.parent)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` to disk."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def publish_dir(tmp: Path, dest: Path) -> None:
    """Make a fully written ``tmp`` directory appear at ``dest`` (replacing an old one) by rename.

    The previous ``dest`` is moved aside first and deleted only after the new one is in place, so at
    every moment one complete version exists on disk.
    """
    fsync_tree(tmp)
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    _fsync_path(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


def temp_dir_for(dest: Path) -> Path:
    """A unique, not yet existing temp path next to ``dest`` (same filesystem, so rename is atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temp directory to fill; on success it replaces ``dest``, on error it is removed."""
    tmp = temp_dir_for(dest)
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def safe_load(path: Path, map_location: str = "cpu") -> Any:
    """Load a torch-serialized file without executing pickled code (``weights_only=True``)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)  # noqa: TID251
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load, it holds pickled objects beyond tensors ({exc.__class__.__name__}); "
            "only load files from sources you trust, converted to safetensors"
        ) from None
