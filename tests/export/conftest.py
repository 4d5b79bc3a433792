"""A tiny trained tunelab run (2-layer BERT on learnable toy rows), shared by the export tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import datasets
import pytest
import torch
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config import RunConfig, dump_config
from tunelab.export.parity import latency_batch
from tunelab.export.pipeline import ExportOptions
from tunelab.inference.artifact import Artifact
from tunelab.tasks.spec import tokenize_dataset

TEXTS = ["the movie was good", "an awful plot", "it was quite fine and dull", "weak story"]


@pytest.fixture
def tiny_run(make_config: Callable[..., RunConfig], tmp_path: Path) -> Path:
    """A run dir (run_config, best/) of the tiny BERT trained until it beats chance on the toy rows."""
    cfg = make_config(train={"num_train_epochs": 10, "lr": 2e-3})
    config = tmp_path / "cfg.yaml"
    config.write_text(dump_config(cfg))
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    return cfg.train.output_dir


@pytest.fixture
def probe_batch() -> Callable[[Artifact], dict[str, torch.Tensor]]:
    """Builds a padded batch of a few toy texts for an artifact's tokenizer."""

    def build(art: Artifact) -> dict[str, torch.Tensor]:
        rows = datasets.Dataset.from_dict({"text": TEXTS})
        features = tokenize_dataset(art.task, art.task_params, art.tokenizer, rows, art.labels)
        return latency_batch(
            features, art.task.collator(art.tokenizer, art.task_params), len(TEXTS), art.task
        )

    return build


@pytest.fixture
def fast() -> ExportOptions:
    """Export options with few latency repeats and recovery steps, for speed."""
    return ExportOptions(latency_repeats=2, recovery_steps=6)
