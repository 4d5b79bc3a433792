"""BBC headlines with a T5 built by tunelab: the example, shrunk to seconds, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "seq2seq_bbc_headlines.yaml"


@pytest.mark.slow
def test_headlines_from_scratch_train_eval_predict(tmp_path: Path):
    runner = CliRunner()
    data = tmp_path / "bbc-headlines"
    prepared = runner.invoke(app, ["data", "prepare", "bbc-headlines", str(data)])
    assert prepared.exit_code == 0, prepared.output
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    assert all(row["source"] and row["target"] for row in rows)
    run = tmp_path / "run"
    trained = runner.invoke(
        app,
        ["train", str(EXAMPLE), f"--data.train_file={data / 'train.jsonl'}",
         f"--data.dev_file={data / 'dev.jsonl'}", f"--data.test_file={data / 'test.jsonl'}",
         "--data.max_train_samples=96", "--data.max_eval_samples=16", "--task.params.max_source_length=48",
         "--task.params.max_target_length=12", "--task.params.from_scratch.hidden_size=32",
         "--task.params.from_scratch.layers=1", "--task.params.from_scratch.heads=2",
         "--task.params.from_scratch.vocab_size=1500", "--train.max_steps=12", "--train.eval_steps=12",
         "--train.warmup_ratio=0", f"--train.output_dir={run}"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    init = json.loads((run / "init" / "config.json").read_text())
    assert init["model_type"] == "t5"
    saved = json.loads((run / "best" / "metrics.json").read_text())
    for split in ("dev", "test"):
        scores = saved[split]
        assert {"rouge1", "rouge2", "rougeL", "bleu", "perplexity"} <= scores.keys()
        assert scores["baseline_rouge1"] > 5  # the lead words share some words with the title
        assert scores["perplexity"] < init["vocab_size"]  # better than a uniform guess over the vocabulary

    test_file = data / "test.jsonl"
    evaluated = runner.invoke(app, ["eval", str(run), "--data", str(test_file)])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout[evaluated.stdout.index("{") :])["n_examples"] == len(rows)
    predicted = runner.invoke(app, ["predict", str(run), "--text", rows[0]["source"]])
    assert predicted.exit_code == 0, predicted.output
    (line,) = [json.loads(x) for x in predicted.stdout.splitlines() if x.startswith("{")]
    assert isinstance(line["generated"], str)
