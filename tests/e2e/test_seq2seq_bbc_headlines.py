"""BBC headlines through the CLI, both examples shrunk to seconds: a T5 built by tunelab from scratch, and a
BERT2BERT warm-started from the shipped MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "seq2seq_bbc_headlines.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared ``bbc-headlines`` asset."""
    data = tmp_path_factory.mktemp("s2s") / "bbc-headlines"
    prepared = CliRunner().invoke(app, ["data", "prepare", "bbc-headlines", str(data)])
    assert prepared.exit_code == 0, prepared.output
    lines = (data / "test.jsonl").read_text().splitlines()
    assert all(row["source"] and row["target"] for row in map(json.loads, lines))
    (data / "test-16.jsonl").write_text("\n".join(lines[:16]) + "\n")
    return data


def eval_and_predict(run: Path, data: Path) -> None:
    """``tunelab eval`` scores every row of a 16-row test file, ``tunelab predict`` generates a string."""
    runner = CliRunner()
    rows = [json.loads(line) for line in (data / "test-16.jsonl").read_text().splitlines()]
    evaluated = runner.invoke(app, ["eval", str(run), "--data", str(data / "test-16.jsonl")])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout[evaluated.stdout.index("{") :])["n_examples"] == len(rows)
    predicted = runner.invoke(app, ["predict", str(run), "--text", rows[0]["source"]])
    assert predicted.exit_code == 0, predicted.output
    (line,) = [json.loads(x) for x in predicted.stdout.splitlines() if x.startswith("{")]
    assert isinstance(line["generated"], str)


@pytest.mark.slow
def test_headlines_from_scratch_train_eval_predict(tmp_path: Path, data: Path):
    runner = CliRunner()
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

    eval_and_predict(run, data)


@pytest.mark.slow
def test_headlines_warm_started_from_minilm_train_eval_predict(tmp_path: Path, data: Path):
    run = tmp_path / "run"
    trained = CliRunner().invoke(
        app,
        ["train", str(EXAMPLES / "seq2seq_bbc_headlines_bert2bert.yaml"),
         f"--data.train_file={data / 'train.jsonl'}", f"--data.dev_file={data / 'dev.jsonl'}",
         f"--data.test_file={data / 'test.jsonl'}", "--data.max_train_samples=32",
         "--data.max_eval_samples=8",
         "--task.params.max_source_length=32", "--task.params.max_target_length=12", "--train.max_steps=4",
         "--train.eval_steps=4", "--train.warmup_ratio=0", f"--train.output_dir={run}"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    init = json.loads((run / "init" / "config.json").read_text())
    assert init["model_type"] == "encoder-decoder"
    assert init["encoder"]["model_type"] == init["decoder"]["model_type"] == "bert"
    assert (run / "init" / "vocab.txt").is_file() or (run / "init" / "tokenizer.json").is_file()
    scores = json.loads((run / "best" / "metrics.json").read_text())["test"]
    assert {"rouge1", "rougeL", "bleu", "perplexity"} <= scores.keys()
    assert scores["perplexity"] < init["decoder"]["vocab_size"]  # better than a uniform guess
    eval_and_predict(run, data)
