"""Recommendation recipe, reduced: the MiniLM two-tower on a slice of bbc-recsim beside popularity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "apps" / "recommend" / "recommend.yaml"
SLICE = {"train.jsonl": 96, "dev.jsonl": 20, "test.jsonl": 60}  # rows: 2 per reader


@pytest.mark.slow
def test_two_tower_on_a_recsim_slice_beats_popularity(tmp_path: Path):
    """Candidates are the slice's own positives (no items.csv): every ranking scores the same ~150 items."""
    runner = CliRunner()
    full = tmp_path / "bbc-recsim"
    prepared = runner.invoke(app, ["data", "prepare", "bbc-recsim", str(full)])
    assert prepared.exit_code == 0, prepared.output
    for name, n in SLICE.items():
        lines = (full / name).read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        (tmp_path / name).write_text("".join(lines), encoding="utf-8")
    overrides = [
        *(f"--data.{name.split('.')[0]}_file={tmp_path / name}" for name in SLICE),
        "--data.max_train_samples=null",
        "--task.params.corpus_file=null",
        "--task.params.max_length=96",
        f"--train.output_dir={tmp_path / 'run'}",
    ]
    trained = runner.invoke(app, ["train", str(CONFIG), *overrides])
    assert trained.exit_code == 0, trained.output
    compared = runner.invoke(
        app, ["apps", "baselines", str(CONFIG), "--run", str(tmp_path / "run"), *overrides]
    )
    assert compared.exit_code == 0, compared.output
    scores = json.loads(compared.stdout)
    assert scores["tuned"]["recall@10"] > scores["popularity"]["recall@10"]
