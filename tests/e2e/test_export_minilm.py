"""int8 export of a briefly trained real MiniLM keeps its dev accuracy (shortened for CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.export.pipeline import ExportOptions, export_model
from tunelab.inference.artifact import load_artifact

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sentiment.yaml"


@pytest.mark.slow
def test_int8_export_of_minilm_keeps_accuracy(tmp_path: Path, rt_overrides):
    runner = CliRunner()
    overrides = rt_overrides(1200, 500, "--train.lr=2e-4", "--train.eval_steps=1000")  # one eval, at the end
    trained = runner.invoke(app, ["train", str(EXAMPLE), *overrides])
    assert trained.exit_code == 0, trained.output

    record = export_model(
        tmp_path / "run", tmp_path / "int8", ExportOptions(quantize="int8", latency_repeats=3)
    )

    report = record.parity
    assert report["before"]["metrics"]["accuracy"] > 0.7
    assert report["metric_drop"] <= 0.02
    assert report["size_ratio"] < 0.7
    reloaded = load_artifact(tmp_path / "int8")
    assert reloaded.info.dev_metrics["accuracy"] == report["after"]["metrics"]["accuracy"]
