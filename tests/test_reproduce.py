"""Run manifests and ``tunelab verify`` on a tiny model: what is recorded, and each determinism level."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from toy_tasks import toy_rows, write_csv
from tunelab.cli import app
from tunelab.config import DataConfig
from tunelab.models.manifest import content_digest, data_files
from tunelab.models.run_info import read_run_info


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> Path:
    """One short training run with train/dev/test files, shared: tests copy it before changing it."""
    root = tmp_path_factory.mktemp("verify")
    raw = {
        "model": {"name_or_path": str(tiny_backbone_dir)},
        "data": {
            "train_file": str(write_csv(root / "train.csv", toy_rows(32, seed=2))),
            "dev_file": str(write_csv(root / "dev.csv", toy_rows(16, seed=3))),
            "test_file": str(write_csv(root / "test.csv", toy_rows(16, seed=4))),
        },
        "task": {"params": {"max_length": 16}},
        "train": {"output_dir": str(root / "run"), "max_steps": 4, "batch_size": 8, "eval_steps": 2},
    }
    config = root / "cfg.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    return root / "run"


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def verify(run: Path):
    return CliRunner().invoke(app, ["verify", str(run)])


def test_record_carries_the_hashes_of_data_features_tokenizer_and_weights(finished_run: Path):
    info = read_run_info(finished_run / "best")
    assert info is not None
    assert info.config is not None
    files = dict(info.data_files)
    start = files.pop("model.name_or_path")
    assert set(files) == {"data.train_file", "data.dev_file", "data.test_file"}
    for key, recorded in files.items():
        path = Path(recorded.path)
        assert str(path) == str(getattr(info.config.data, key.split(".")[1]))
        assert (recorded.sha256, recorded.size) == (sha256(path), path.stat().st_size)
    assert start.path == str(Path(info.config.model.name_or_path or "").resolve())
    assert start.sha256 == content_digest(Path(start.path)).sha256
    assert set(info.features_sha256) == {"train", "dev", "test"}
    assert len(set(info.features_sha256.values())) == 3  # different rows, different fingerprints
    assert info.tokenizer_sha256 is not None
    assert info.chat_template_sha256 is None  # BERT has no chat template
    weights = finished_run / "best" / "model.safetensors"
    assert info.weights["model.safetensors"].sha256 == sha256(weights)


def test_data_file_hash_changes_with_the_file(finished_run: Path, tmp_path: Path):
    info = read_run_info(finished_run / "best")
    assert info is not None
    assert info.config is not None
    edited = Path(shutil.copy(info.config.data.train_file, tmp_path / "train.csv"))
    edited.write_text(edited.read_text() + "one more row,positive\n")
    again = data_files(DataConfig(train_file=edited))["data.train_file"]
    assert again.sha256 != info.data_files["data.train_file"].sha256


def test_verify_untouched_run_is_bitwise(finished_run: Path, tmp_path: Path):
    result = verify(copy_run(finished_run, tmp_path))
    assert result.exit_code == 0, result.output
    assert ": bitwise (" in result.output
    assert "moved:" not in result.output


def test_verify_refuses_an_edited_data_file_naming_it(finished_run: Path, tmp_path: Path):
    info = read_run_info(finished_run / "best")
    assert info is not None
    dev = Path(info.data_files["data.dev_file"].path)
    original = dev.read_bytes()
    try:
        dev.write_bytes(original + b"an extra row,positive\n")
        result = verify(copy_run(finished_run, tmp_path))
    finally:
        dev.write_bytes(original)
    assert result.exit_code == 1
    assert f"{dev}: data.dev_file changed since the run" in result.output


def test_verify_refuses_a_changed_start_model_naming_it(finished_run: Path, tmp_path: Path):
    """Other start weights train another model: verify names model.name_or_path before re-training."""
    info = read_run_info(finished_run / "best")
    assert info is not None
    start = Path(info.data_files["model.name_or_path"].path)
    weights = start / "model.safetensors"
    original = weights.read_bytes()
    try:
        state = load_file(weights)
        name = sorted(state)[0]
        save_file({**state, name: state[name] + 1e-3}, str(weights), metadata={"format": "pt"})
        result = verify(copy_run(finished_run, tmp_path))
    finally:
        weights.write_bytes(original)
    assert result.exit_code == 1
    assert f"{start}: model.name_or_path changed since the run" in result.output


def tamper_metric(run: Path) -> str:
    path = run / "best" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["test"]["accuracy"] += 0.25
    path.write_text(json.dumps(metrics))
    return "moved: test.accuracy: "


def tamper_weight(run: Path) -> str:
    path = run / "best" / "model.safetensors"
    state = load_file(path)
    name = sorted(state)[0]
    state[name] = state[name] + 1e-3
    save_file(state, str(path), metadata={"format": "pt"})
    return f"moved: {path}: does not match its recorded sha256"


@pytest.mark.parametrize("tamper", [tamper_metric, tamper_weight])
def test_verify_reports_a_tampered_run_as_differs(finished_run: Path, tmp_path: Path, tamper):
    run = copy_run(finished_run, tmp_path)
    expected = tamper(run)
    result = verify(run)
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert ": differs (" in result.output


def test_verify_weights_that_differ_within_tolerance_are_numerical(finished_run: Path, tmp_path: Path):
    """Weights consistent with their record but not bitwise equal to the re-run's (another CPU's run)."""
    run = copy_run(finished_run, tmp_path)
    tamper_weight(run)
    record = run / "best" / "tunelab_run.json"
    raw = json.loads(record.read_text())
    raw["weights"]["model.safetensors"]["sha256"] = sha256(run / "best" / "model.safetensors")
    raw["weights"]["model.safetensors"]["size"] = (run / "best" / "model.safetensors").stat().st_size
    record.write_text(json.dumps(raw))
    result = CliRunner().invoke(app, ["verify", str(run), "--tolerance", "0.001"])
    assert result.exit_code == 0, result.output
    assert ": numerical (" in result.output
