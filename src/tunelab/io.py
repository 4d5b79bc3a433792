"""Safe file I/O: atomic writes and directories, weights-only loading, text that says where it breaks.

This is the only module that calls ``torch.load``; everything that writes outputs goes through
``atomic_write``/``atomic_dir`` so a crash never leaves a half-written file or model directory.
Text files are opened with ``open_text`` so a byte that is not UTF-8 becomes a ``file:line`` message
(``utf8_error``) instead of a ``UnicodeDecodeError`` traceback from wherever the file was read.
YAML is parsed with ``parse_yaml`` only: safe construction, YAML 1.2 floats, duplicate keys refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from tunelab.errors import CheckpointError, ConfigError, TunelabError


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


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}")


def recover_interrupted(parent: Path) -> list[str]:
    """Undo what a kill inside :func:`atomic_write` / :func:`publish_dir` left in ``parent``.

    A kill between ``publish_dir``'s two renames leaves ``dest`` missing and its previous version
    aside as ``.dest.old-*``: that complete version is renamed back. Every other leftover (a temp
    copy, possibly half-written, or an old version already replaced) is deleted. Returns a line per
    entry acted on, for the log.
    """
    done: list[str] = []
    leftovers = sorted(
        (p for p in parent.iterdir() if _LEFTOVER.fullmatch(p.name)) if parent.is_dir() else [],
        key=lambda p: p.stat().st_mtime,
        reverse=True,  # newest first: the one restored when several were moved aside
    )
    for path in leftovers:
        match = _LEFTOVER.fullmatch(path.name)
        assert match is not None
        dest = parent / match["name"]
        if match["kind"] == "old" and not dest.exists():
            os.replace(path, dest)
            done.append(f"restored {dest.name} from {path.name}")
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        done.append(f"removed {path.name}")
    if done:
        _fsync_path(parent)
    return done


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


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a non-UTF-8 byte


def open_text(path: Path) -> TextIO:
    """``path`` opened to read UTF-8 text without raising on a bad byte; check it with ``utf8_error``.

    A leading BOM (Excel exports) is dropped; ``newline=""`` keeps line endings as written, so the
    ``csv`` module and physical line numbers agree.
    """
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def utf8_error(text: str) -> tuple[int, str] | None:
    """(1-based line within ``text``, message) of the first byte that is not UTF-8, or None.

    ``text`` must come from ``open_text`` (or ``errors="surrogateescape"``), which keeps each bad byte
    as a lone surrogate; valid UTF-8 never decodes to one, so a match is always a bad byte.
    """
    match = _UNDECODABLE.search(text)
    if match is None:
        return None
    start = match.start()
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    byte = ord(match.group()) - 0xDC00
    line = text.count("\n", 0, start) + 1
    return line, f"not UTF-8 (byte 0x{byte:02x} at column {column}); save it as UTF-8"


def read_utf8(path: Path, error: type[TunelabError]) -> str:
    """The whole text of ``path``; a byte that is not UTF-8 raises ``error`` naming ``file:line``."""
    with open_text(path) as fh:
        text = fh.read()
    bad = utf8_error(text)
    if bad is not None:
        raise error(f"{path}:{bad[0]}: {bad[1]}")
    return text


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (data and weights files can be larger than memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_json(path: Path) -> Any:
    """Parse a JSON file of a model or run directory; a damaged file is one CheckpointError saying where.

    transformers reports a broken ``config.json`` as a deep traceback; reading it here first names the
    file, line and column instead.
    """
    try:
        text = read_utf8(path, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: not valid JSON (line {exc.lineno} col {exc.colno}: {exc.msg}); "
            "the model directory is damaged: restore it or save the model again"
        ) from None


class DuplicateKeyError(yaml.YAMLError):  # type: ignore[misc]  # PyYAML ships no stubs: YAMLError is Any
    """A mapping names one key twice; PyYAML would keep the last value and silently drop the first."""


class _YamlLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs: SafeLoader is Any
    """SafeLoader that reads ``3e-5`` as a float (YAML 1.2) and refuses duplicate keys at any depth.

    PyYAML's 1.1 rules need ``3.0e-5``; and two ``train:`` blocks would merge into the last one, so the
    first block's settings would vanish without a word.
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """Check keys before PyYAML builds the dict (merge keys ``<<`` may be overridden, as YAML allows)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):  # PyYAML's own construct_mapping reports it
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} at line {line} duplicates line {seen[key]}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with tunelab's loader (safe: no arbitrary object construction)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML file ``path`` (a ``what`` file, e.g. "search space"); problems raise ``ConfigError``.

    A missing file, a byte that is not UTF-8 (``file:line``), a duplicate key or invalid YAML each say
    which file.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return parse_yaml(read_utf8(path, ConfigError))
    except yaml.YAMLError as exc:  # DuplicateKeyError included
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
