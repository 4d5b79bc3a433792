"""task.params.classifier_pooling: mean pooling on ModernBERT, refused by architectures without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from toy_tasks import (
    continual_classification,
    save_previous_run,
    tiny_bert_dir,
    tiny_modernbert_dir,
    toy_run_config,
)
from tunelab.errors import ConfigError
from tunelab.tasks.classification import TASK, Params
from tunelab.tasks.spec import load_with_labels
from tunelab.training import prepare_inputs, resolve

LABELS = ["negative", "positive"]


def test_mean_pooling_reaches_the_forward_and_the_saved_config(tmp_path: Path):
    model_dir = tiny_modernbert_dir()
    batch = AutoTokenizer.from_pretrained(model_dir)(
        ["a good fun movie", "bad"], padding=True, return_tensors="pt"
    )
    logits = {}
    for pooling in ("cls", "mean"):
        torch.manual_seed(0)  # the same fresh head for both
        model = load_with_labels(TASK, model_dir, LABELS, Params(classifier_pooling=pooling)).eval()
        with torch.no_grad():
            logits[pooling] = model(**batch).logits
    with torch.no_grad():
        hidden = model.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        expected = model.classifier(model.head((hidden * mask).sum(1) / mask.sum(1)))
    torch.testing.assert_close(logits["mean"], expected)  # padding left out of the mean
    assert not torch.allclose(logits["cls"], logits["mean"])
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["classifier_pooling"] == "mean"


def test_an_architecture_without_classifier_pooling_refuses_it_naming_the_key():
    with pytest.raises(ConfigError, match="classifier_pooling"):
        load_with_labels(TASK, tiny_bert_dir(), LABELS, Params(classifier_pooling="mean"))


def test_a_continual_run_refuses_classifier_pooling_on_an_architecture_without_it(
    tiny_backbone_dir, tmp_path
):
    """The grown head loads through the same refusal as a fresh one (models.load.load_pretrained)."""
    previous = save_previous_run(tiny_backbone_dir, tmp_path)
    sections = continual_classification(tmp_path)
    sections["task"]["params"]["classifier_pooling"] = "mean"
    plan = resolve(toy_run_config(tiny_backbone_dir, sections, [{"name": "full"}], tmp_path / "b", previous))
    with pytest.raises(ConfigError, match="classifier_pooling"):
        prepare_inputs(plan)
