"""Atomic files and directories, path confinement, weights-only loading, resume config diffs."""

from __future__ import annotations

import pathlib
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tunelab.config import dump_config, validate_config
from tunelab.errors import CheckpointError
from tunelab.io import (
    atomic_dir,
    atomic_write,
    publish_dir,
    read_json,
    recover_interrupted,
    safe_load,
    temp_dir_for,
    utf8_error,
)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("data", ["new text", b"\x00new bytes"])
def test_atomic_write_replaces_content_without_temp_files(tmp_path: Path, data: str | bytes) -> None:
    path = tmp_path / "sub" / "out.json"
    path.parent.mkdir()
    path.write_text("old content that is longer than the new one")

    atomic_write(path, data)

    assert path.read_bytes() == (data.encode() if isinstance(data, str) else data)
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_atomic_write_creates_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.txt"

    atomic_write(path, "x")

    assert path.read_text() == "x"


def test_atomic_dir_publishes_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "best"
    dest.mkdir()
    (dest / "stale.bin").write_text("old")

    with atomic_dir(dest) as tmp:
        assert not dest.joinpath("new.bin").exists()
        (tmp / "new.bin").write_text("new")

    assert _tree(dest) == {"new.bin": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def _fill_then_crash(dest: Path, name: str) -> None:
    with atomic_dir(dest) as tmp:
        (tmp / name).write_text("half-written")
        raise RuntimeError("crash mid-write")


def test_atomic_dir_error_keeps_previous_content(tmp_path: Path) -> None:
    dest = tmp_path / "best"
    (dest / "nested").mkdir(parents=True)
    (dest / "model.bin").write_text("v1")
    (dest / "nested" / "cfg.json").write_text("{}")

    with pytest.raises(RuntimeError, match="crash"):
        _fill_then_crash(dest, "model.bin")

    assert _tree(dest) == {"model.bin": "v1", "nested/cfg.json": "{}"}
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_atomic_dir_error_without_previous_dir_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "best"

    with pytest.raises(RuntimeError, match="crash"):
        _fill_then_crash(dest, "x")

    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_publish_dir_replaces_existing_dir(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "old.bin").write_text("old")
    tmp = temp_dir_for(dest)
    tmp.mkdir()
    (tmp / "new.bin").write_text("new")

    publish_dir(tmp, dest)

    assert _tree(dest) == {"new.bin": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_recover_interrupted_restores_a_dir_moved_aside_and_drops_the_rest(tmp_path: Path) -> None:
    """A kill between publish_dir's renames: ``best`` missing, its previous version aside, a temp copy."""
    for name, content in ((".best.old-0000aaaa", "previous"), (".best.tmp-0000bbbb", "half")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "w.bin").write_text(content)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "w.bin").write_text("current")
    (tmp_path / ".kept.old-0000cccc").mkdir()  # replaced already: the kill came before its deletion
    (tmp_path / ".metrics.jsonl.tmp-0000dddd").write_text("{")
    (tmp_path / ".hidden-by-user").mkdir()

    done = recover_interrupted(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-by-user", "best", "kept"]
    assert _tree(tmp_path / "best") == {"w.bin": "previous"}
    assert _tree(tmp_path / "kept") == {"w.bin": "current"}
    assert "restored best from .best.old-0000aaaa" in done
    assert len(done) == 4
    assert recover_interrupted(tmp_path) == []


def test_safe_load_round_trips_tensor_dict(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    state = {"weight": torch.arange(6.0).reshape(2, 3), "step": torch.tensor(7), "meta": {"lr": 0.1}}
    torch.save(state, path)

    loaded = safe_load(path)

    torch.testing.assert_close(loaded["weight"], state["weight"])
    assert loaded["step"].item() == 7
    assert loaded["meta"] == {"lr": 0.1}


class Custom:
    """An arbitrary class: weights-only loading must not instantiate it."""

    def __init__(self) -> None:
        self.value = 1


class Payload:
    """Unpickling this would create a file: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["custom_instance", "code_payload"])
def test_safe_load_refuses_pickled_objects(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    obj = {"w": torch.zeros(2), "obj": Custom() if kind == "custom_instance" else Payload(marker)}
    torch.save(obj, path)

    with pytest.raises(CheckpointError, match="refused to load, it holds pickled objects"):
        safe_load(path)
    assert not marker.exists()


def test_safe_load_missing_file_raises_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        safe_load(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("content", "after_path"),
    [
        (b'{"model_type": "bert",\n', ": not valid JSON (line 2 col 1: Expecting property name enclosed in"),
        (b'{"a": 1}\n{"b": 2}\n', ": not valid JSON (line 2 col 1: Extra data)"),
        (b'{\n  "name": "caf\xe9"\n}\n', ":2: not UTF-8 (byte 0xe9 at column 15)"),
    ],
    ids=["truncated", "two-objects", "not-utf8"],
)
def test_read_json_damaged_file_is_one_checkpoint_error_saying_where(
    tmp_path: Path, content: bytes, after_path: str
) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)

    with pytest.raises(CheckpointError, match=f"^{re.escape(f'{path}{after_path}')}") as excinfo:
        read_json(path)

    assert "\n" not in str(excinfo.value)


def test_read_json_reads_a_bom_prefixed_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": [1, "\xc3\xa9"]}')

    assert read_json(path) == {"a": [1, "é"]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"plain\nascii\n", None),
        ("中文\n\u00e9".encode(), None),
        (b"ok\nab\xffc\n", (2, "not UTF-8 (byte 0xff at column 3); save it as UTF-8")),
        (b"\xc3(\n", (1, "not UTF-8 (byte 0xc3 at column 1); save it as UTF-8")),
        (
            b"\xed\xa0\x80\n",
            (1, "not UTF-8 (byte 0xed at column 1); save it as UTF-8"),
        ),  # an encoded surrogate
    ],
)
def test_utf8_error_finds_the_first_bad_byte(raw: bytes, expected: tuple[int, str] | None) -> None:
    assert utf8_error(raw.decode("utf-8", "surrogateescape")) == expected


def _config_dict(**train: Any) -> dict[str, Any]:
    import yaml

    raw = {"model": {"name_or_path": "m"}, "data": {"train_file": "t.csv"}, "train": train}
    return yaml.safe_load(dump_config(validate_config(raw)))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"lr": 3e-5}, ["train.lr"]),
        ({"lr": 3e-5, "seed": 1, "batch_size": 4}, ["train.batch_size", "train.lr", "train.seed"]),
        ({"logging_steps": 1, "save_steps": 5, "eval_batch_size": 2}, []),
        ({"logging_steps": 1, "lr": 3e-5}, ["train.lr"]),
        ({}, []),
    ],
)
def test_config_differences_reports_only_training_relevant_keys(
    changes: dict[str, Any], expected: list[str]
) -> None:
    from tunelab.training.checkpoint import config_differences

    assert config_differences(_config_dict(), _config_dict(**changes)) == expected


def test_config_differences_reports_added_and_removed_keys() -> None:
    from tunelab.training.checkpoint import config_differences

    saved = _config_dict()
    current = _config_dict()
    current["task"]["params"]["max_length"] = 64
    del saved["train"]["lr"]

    assert config_differences(saved, current) == ["task.params.max_length", "train.lr"]
