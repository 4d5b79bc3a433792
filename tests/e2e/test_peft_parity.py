"""LoRA at parity (issue 17): the LoRA example's defaults reach full fine-tuning on the same rows.

Both shipped examples train on the same reduced Rotten Tomatoes budget (same rows, same test rows),
each with its own learning rate and epochs; the LoRA run's test accuracy must be within ``MARGIN`` of
the full fine-tune's measured here. LoRA as it was before issue 17 (query/value only, lr 5e-4) stayed
11 points below full fine-tuning on 2,000 rows (bench/RESULTS.md, Methods), far outside the margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# 400 test rows: one run's accuracy has a standard error of about 2 points, so 3 points of slack.
MARGIN = 0.03


@pytest.mark.slow
def test_lora_example_matches_full_fine_tuning_on_the_same_rows(tmp_path: Path, rt_overrides):
    runner = CliRunner()
    accuracy = {}
    for example in ("sentiment", "sentiment_lora"):
        out = tmp_path / example
        overrides = rt_overrides(1200, 400, f"--train.output_dir={out}")
        trained = runner.invoke(app, ["train", str(EXAMPLES / f"{example}.yaml"), *overrides])
        assert trained.exit_code == 0, trained.output
        accuracy[example] = json.loads((out / "best" / "metrics.json").read_text())["test"]["accuracy"]

    assert accuracy["sentiment_lora"] >= accuracy["sentiment"] - MARGIN, accuracy
