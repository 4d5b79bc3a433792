"""Extractive QA end to end on the shipped MiniLM and the shipped BBC questions, shortened for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.data.squad import read_qa

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qa_bbc.yaml"


@pytest.mark.slow
def test_example_qa_trains_evaluates_and_predicts_on_real_minilm(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "bbc-squad"
    prepared = runner.invoke(app, ["data", "prepare", "bbc-squad", str(data)])
    assert prepared.exit_code == 0, prepared.output
    run = tmp_path / "run"
    trained = runner.invoke(
        app,
        [
            "train",
            str(EXAMPLE),
            f"--data.train_file={data / 'train.json'}",
            f"--data.dev_file={data / 'dev.json'}",
            "--data.max_train_samples=48",
            "--data.max_eval_samples=24",
            "--task.params.max_length=128",
            "--task.params.doc_stride=32",
            "--train.num_train_epochs=1",
            "--train.lr=3e-4",
            "--train.logging_steps=1",
            f"--train.output_dir={run}",
        ],
    )
    assert trained.exit_code == 0, trained.output
    dev = json.loads((run / "best" / "metrics.json").read_text())["dev"]
    assert {"exact_match", "f1", "HasAns_f1", "NoAns_f1"} <= dev.keys()
    losses = [
        json.loads(line)["train/loss"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert losses[-1] < losses[0], losses

    evaluated = runner.invoke(app, ["eval", str(run), "--data", str(data / "dev.json")])
    assert evaluated.exit_code == 0, evaluated.output

    cols = read_qa(data / "dev.json")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"question": q, "context": c}) + "\n"
            for q, c in zip(cols["question"][:5], cols["context"][:5], strict=True)
        ),
        encoding="utf-8",
    )
    first = runner.invoke(app, ["predict", str(run), "--file", str(questions)])
    again = runner.invoke(app, ["predict", str(run / "best"), "--file", str(questions)])
    assert first.exit_code == 0, first.output
    rows = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 5
    for row in rows:
        if not row["no_answer"]:
            assert row["context"][row["start"] : row["end"]] == row["answer"]
    assert first.stdout == again.stdout
