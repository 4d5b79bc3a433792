"""`tunelab export` end to end: card metadata, run record, refusals, and atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config import validate_config
from tunelab.errors import ExportError
from tunelab.export.model_card import UNKNOWN, card_metadata
from tunelab.export.pipeline import ExportOptions, check_options
from tunelab.models.run_info import ExportInfo, RunInfo


def export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def test_cli_export_writes_card_record_and_table(tiny_run: Path, tmp_path: Path, toy_data):
    (toy_data["train"].parent / "SOURCE.txt").write_text("toy: written for the tests, CC0\n")
    out = tmp_path / "int8"
    result = export(str(tiny_run), "--to", str(out), "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert "export parity" in result.stderr
    assert "latency ms, batch 32" in result.stderr
    printed = json.loads(result.stdout)
    assert printed["steps"] == ["int8"]

    card = (out / "README.md").read_text()
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["tunelab"]["labels"] == ["negative", "positive"]
    assert meta["tunelab"]["data_license"] == "toy: written for the tests, CC0"
    assert meta["tunelab"]["base_model_license"] == UNKNOWN  # a local dir, not a shipped model
    assert meta["license"] == "other"
    assert {m["name"] for m in meta["metrics"]} == {"accuracy", "macro_f1"}
    assert "## Intended use" in body
    assert "## Limitations" in body
    assert "| size MB |" in body
    info = json.loads((out / "tunelab_run.json").read_text())
    assert info["export"]["parity"]["metric"] == "accuracy"
    assert info["export"]["source"] == str(tiny_run / "best")

    predicted = CliRunner().invoke(app, ["predict", str(out), "--text", "a great movie"])
    assert predicted.exit_code == 0, predicted.output


def test_cli_refusals_overwrite_and_eval_data(tiny_run: Path, tmp_path: Path, toy_data):
    merge = export(str(tiny_run), "--to", str(tmp_path / "m"), "--merge")
    assert merge.exit_code == 1
    assert "has no adapter to merge" in merge.stderr
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    refused = export(str(tiny_run), "--to", str(out))
    assert refused.exit_code == 1
    assert "already exists; pass --overwrite" in refused.stderr
    assert (out / "keep.txt").exists()
    replaced = export(str(tiny_run), "--to", str(out), "--overwrite", "--eval-data", str(toy_data["test"]))
    assert replaced.exit_code == 0, replaced.output
    assert not (out / "keep.txt").exists()
    assert (out / "model.safetensors").exists()
    scored = CliRunner().invoke(app, ["eval", str(tiny_run), "--data", str(toy_data["test"])])
    reported = json.loads(replaced.stdout)["parity"]["before"]["metrics"]
    expected = json.loads(scored.stdout)  # --eval-data is scored exactly as `tunelab eval` scores it
    assert reported["accuracy"] == expected["accuracy"]
    assert reported["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_check_options_reports_every_problem(tmp_path: Path):
    opts = ExportOptions(quantize="int4", prune="heads", dtype="float16", onnx=True, prune_amount=1.5)
    with pytest.raises(ExportError) as info:
        check_options(opts, tmp_path)
    message = str(info.value)
    for expected in (
        "--quantize: 'int4' is not supported; choose one of: int8",
        "--prune: 'heads' is not supported; choose one of: magnitude, neurons",
        "--dtype: only applies to --merge",
        "--to ",
        "--prune-amount: must be between 0 and 1",
    ):
        assert expected in message


def test_card_metadata_for_shipped_model():
    info = RunInfo(
        task="classification",
        labels=["negative", "positive"],
        config=validate_config(
            {"model": {"name_or_path": "minilm-l6"}, "data": {"train_file": "nowhere/train.csv"}}
        ),
        dev_metrics={"accuracy": 0.81234, "macro_f1": 0.8},
        export=ExportInfo(source="run/best", steps=["int8"], parity={}),
    )
    meta = card_metadata(info)
    assert meta["license"] == "apache-2.0"
    assert meta["language"] == ["en"]
    assert meta["tunelab"]["data_license"] == UNKNOWN
    assert meta["metrics"][0] == {"name": "accuracy", "type": "accuracy", "value": 0.8123, "split": "dev"}
    assert "int8" in meta["tags"]
