"""The typed run record: round trip, provenance, versions, and clear refusals of bad records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tunelab.data import Columns
from tunelab.errors import CheckpointError
from tunelab.models.run_info import (
    RUN_FILE,
    RUN_INFO_VERSION,
    RunInfo,
    hardware_info,
    read_run_info,
    write_run_info,
)


def test_record_round_trips_with_provenance_added(make_config, tmp_path: Path):
    info = RunInfo(
        task="classification",
        labels=["negative", "positive"],
        columns=Columns(text="review", label="stars"),
        config=make_config(),
        step=12,
        dev_metrics={"accuracy": 0.75},
    )
    write_run_info(tmp_path, info)
    read = read_run_info(tmp_path)
    assert read is not None
    assert read.model_copy(update={"versions": {}, "git_sha": None, "hardware": {}}) == info
    assert {"torch", "transformers", "tunelab"} <= set(read.versions)
    assert read.hardware == hardware_info()  # the CPU and the flags its bf16 / int8 kernels depend on
    assert set(read.hardware["flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert json.loads((tmp_path / RUN_FILE).read_text())["version"] == RUN_INFO_VERSION


def test_record_checksums_the_weights_files_beside_it(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "tokenizer.json").write_text("{}")
    write_run_info(tmp_path, RunInfo(task="classification"))
    read = read_run_info(tmp_path)
    assert read is not None
    assert {name: digest.sha256 for name, digest in read.weights.items()} == {
        "model.onnx": hashlib.sha256(b"graph").hexdigest(),
        "model.safetensors": hashlib.sha256(b"weights").hexdigest(),
    }
    assert read.weights["model.safetensors"].size == len(b"weights")


def test_a_directory_without_a_record_has_none(tmp_path: Path):
    assert read_run_info(tmp_path) is None


def test_an_unversioned_record_reads_as_version_one(tmp_path: Path):
    (tmp_path / RUN_FILE).write_text(json.dumps({"task": "qa", "labels": [], "columns": {"text": "text"}}))
    read = read_run_info(tmp_path)
    assert read is not None
    assert (read.version, read.task) == (1, "qa")
    assert (read.data_files, read.features_sha256, read.weights) == ({}, {}, {})  # written before manifests


@pytest.mark.parametrize(("version", "advice"), [(RUN_INFO_VERSION + 1, "Upgrade tunelab"), (0, "Re-train")])
def test_another_version_is_refused_with_what_to_do(tmp_path: Path, version: int, advice: str):
    (tmp_path / RUN_FILE).write_text(json.dumps({"version": version, "task": "classification"}))
    with pytest.raises(CheckpointError, match=rf"run record version {version}.*{advice}"):
        read_run_info(tmp_path)


def test_a_bad_record_names_the_key_and_a_damaged_file_says_so(tmp_path: Path):
    (tmp_path / RUN_FILE).write_text(json.dumps({"task": "classification", "lables": ["a"]}))
    with pytest.raises(CheckpointError, match=r"lables: unknown key"):
        read_run_info(tmp_path)
    (tmp_path / RUN_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_run_info(tmp_path)
