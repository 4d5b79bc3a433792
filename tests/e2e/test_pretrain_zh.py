"""From scratch to a fine-tuned model on the shipped Chinese data: the two examples, shrunk for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_pretrain_from_scratch_then_fine_tune_sentiment(tmp_path: Path):
    runner = CliRunner()
    for name in ("zh-corpus", "chnsenticorp-like"):
        prepared = runner.invoke(app, ["data", "prepare", name, str(tmp_path / name)])
        assert prepared.exit_code == 0, prepared.output
    pretrain = tmp_path / "pretrain"
    tiny = ["--task.params.from_scratch.hidden_size=32", "--task.params.from_scratch.layers=2"]
    trained = runner.invoke(
        app,
        ["train", str(EXAMPLES / "pretrain_zh.yaml"), *tiny, "--task.params.from_scratch.heads=2",
         f"--data.train_file={tmp_path / 'zh-corpus' / 'train.txt'}",
         f"--data.dev_file={tmp_path / 'zh-corpus' / 'dev.txt'}",
         "--data.max_train_samples=600", "--data.max_eval_samples=100", "--task.params.max_length=64",
         "--train.max_steps=30", "--train.eval_steps=15", f"--train.output_dir={pretrain}"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    history = [json.loads(line) for line in (pretrain / "metrics.jsonl").read_text().splitlines()]
    perplexities = [row["eval/perplexity"] for row in history if "eval/perplexity" in row]
    vocab = json.loads((pretrain / "init" / "config.json").read_text())["vocab_size"]
    assert perplexities[-1] < perplexities[0] < vocab  # random init scores about the vocabulary size

    scored = runner.invoke(app, ["eval", str(pretrain), f"--data={tmp_path / 'zh-corpus' / 'dev.txt'}"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout[scored.stdout.index("{") :])["n_tokens"] > 0

    data = tmp_path / "chnsenticorp-like"
    tuned = runner.invoke(
        app,
        ["train", str(EXAMPLES / "sentiment_zh.yaml"), f"--model.name_or_path={pretrain / 'best'}",
         f"--data.train_file={data / 'train.csv'}", f"--data.dev_file={data / 'dev.csv'}",
         f"--data.test_file={data / 'test.csv'}", "--data.max_train_samples=2400",
         "--data.max_eval_samples=300", "--task.params.max_length=64", "--train.num_train_epochs=4",
         "--train.eval_steps=25", "--train.lr=1e-3", f"--train.output_dir={tmp_path / 'sentiment'}"],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    test = json.loads((tmp_path / "sentiment" / "best" / "metrics.json").read_text())["test"]
    assert test["accuracy"] > test["majority_baseline_accuracy"] + 0.05, test
