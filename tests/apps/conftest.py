"""Tiny saved classification runs for the app tests: a trained toy sentiment run and a topic model."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import BertForSequenceClassification
from typer.testing import CliRunner

from toy_tasks import toy_rows, toy_run_config, write_csv
from tunelab.cli import app
from tunelab.config import dump_config
from tunelab.data import Columns
from tunelab.models.artifact import save_model
from tunelab.models.load import load_pretrained, load_tokenizer
from tunelab.models.run_info import RunInfo


@pytest.fixture(scope="session")
def toy_sentiment_run(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT trained on the learnable toy rows (negative/positive by a cue word)."""
    work = tmp_path_factory.mktemp("toy-sentiment")
    data = {"train_file": str(write_csv(work / "train.csv", toy_rows(96, seed=2)))}
    sections = {"data": data, "task": {"name": "classification", "params": {"max_length": 32}}}
    cfg = toy_run_config(
        tiny_backbone_dir, sections, [{"name": "full"}], work / "run", max_steps=120, lr=2e-3, warmup_steps=2
    )
    config = work / "cfg.yaml"
    config.write_text(dump_config(cfg))
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    return work / "run"


@pytest.fixture(scope="session")
def random_topic_run(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny classifier over two topics, saved like a run's best/ (its answers are constant)."""
    labels = ["business", "sport"]
    out = tmp_path_factory.mktemp("topic") / "best"
    model = load_pretrained(BertForSequenceClassification, tiny_backbone_dir, labels)
    info = RunInfo(task="classification", labels=labels, columns=Columns(text="text", label="label"))
    save_model(model, load_tokenizer(tiny_backbone_dir), out, info)
    return out
