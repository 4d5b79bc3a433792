"""The qa task through the CLI on the tiny model: learns toy data, eval == training report, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from toy_tasks import TOY_TASKS
from tunelab.cli import app


def test_qa_learns_toy_data_and_predictions_round_trip(tmp_path: Path, tiny_backbone_dir: Path) -> None:
    sections = TOY_TASKS["qa"](tmp_path)
    raw = {
        "model": {"name_or_path": str(tiny_backbone_dir)},
        **sections,
        "train": {
            "output_dir": str(tmp_path / "run"),
            "num_train_epochs": 8,
            "batch_size": 8,
            "lr": 3e-3,
            "warmup_steps": 2,
            "save_steps": 1000,
            "metric_for_best_model": "f1",
            "seed": 7,
        },
    }
    cfg = tmp_path / "qa.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(cfg)])
    assert trained.exit_code == 0, trained.output
    dev = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())["dev"]
    assert dev["f1"] > 50.0, dev  # always answering "" scores 20 (a fifth of the toy questions)

    evaluated = runner.invoke(app, ["eval", str(tmp_path / "run"), "--data", sections["data"]["dev_file"]])
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert again["f1"] == dev["f1"]
    assert again["exact_match"] == dev["exact_match"]

    first = runner.invoke(app, ["predict", str(tmp_path / "run"), "--file", sections["data"]["dev_file"]])
    second = runner.invoke(
        app, ["predict", str(tmp_path / "run" / "best"), "--file", sections["data"]["dev_file"]]
    )
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    rows = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 16
    for row in rows:
        assert row["no_answer"] or row["context"][row["start"] : row["end"]] == row["answer"]
