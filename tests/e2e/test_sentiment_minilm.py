"""The shipped example on the shipped real model and data (MiniLM, Rotten Tomatoes), shortened for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sentiment.yaml"


@pytest.mark.slow
def test_example_sentiment_learns_on_real_minilm(tmp_path: Path, rt_overrides):
    runner = CliRunner()
    overrides = rt_overrides(1200, 400, "--train.eval_steps=20")
    trained = runner.invoke(app, ["train", str(EXAMPLE), *overrides])
    assert trained.exit_code == 0, trained.output

    metrics = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())
    for split in ("dev", "test"):
        assert metrics[split]["accuracy"] > metrics[split]["majority_baseline_accuracy"] + 0.1, metrics[split]

    predicted = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "run"),
            "--text",
            "a moving, beautifully acted film",
            "--text",
            "a dull, tedious mess",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    labels = [json.loads(line)["label"] for line in predicted.stdout.splitlines() if line.startswith("{")]
    assert labels == ["positive", "negative"]
