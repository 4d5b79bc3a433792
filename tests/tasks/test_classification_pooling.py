"""task.params.classifier_pooling: mean pooling on ModernBERT, refused by architectures without it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from toy_tasks import (
    TOY_TASKS,
    continual_classification,
    save_previous_run,
    tiny_bert_dir,
    tiny_modernbert_dir,
    toy_run_config,
)
from tunelab.errors import ConfigError
from tunelab.tasks.classification import TASK, Params
from tunelab.tasks.spec import load_with_labels
from tunelab.training import resolve

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


def test_the_refusal_reads_the_config_not_the_weights(tmp_path):
    """The architecture's config class decides, before transformers builds or loads any weight."""
    shutil.copy(tiny_bert_dir() / "config.json", tmp_path)  # a config and no weights at all
    with pytest.raises(ConfigError, match=r"\['classifier_pooling'\].*BertConfig"):
        load_with_labels(TASK, tmp_path, LABELS, Params(classifier_pooling="mean"))


def test_validate_refuses_classifier_pooling_for_a_local_model_without_it(tmp_path):
    sections = TOY_TASKS["classification"](tmp_path)
    sections["task"]["params"]["classifier_pooling"] = "mean"
    cfg = toy_run_config(tiny_bert_dir(), sections, [{"name": "full"}], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"task\.params: .*\['classifier_pooling'\]"):
        resolve(cfg, count_labels=False)  # what `tunelab validate` runs: no model is loaded
    sections["task"]["params"]["classifier_pooling"] = None
    resolve(
        toy_run_config(tiny_bert_dir(), sections, [{"name": "full"}], tmp_path / "run"), count_labels=False
    )
    sections["task"]["params"]["classifier_pooling"] = "mean"
    resolve(toy_run_config(tiny_modernbert_dir(), sections, [{"name": "full"}], tmp_path / "run"), False)


def test_a_continual_run_refuses_classifier_pooling_on_an_architecture_without_it(
    tiny_backbone_dir, tmp_path
):
    """The previous run's model is checked like any start, at validation."""
    previous = save_previous_run(tiny_backbone_dir, tmp_path)
    sections = continual_classification(tmp_path)
    sections["task"]["params"]["classifier_pooling"] = "mean"
    cfg = toy_run_config(tiny_backbone_dir, sections, [{"name": "full"}], tmp_path / "b", previous)
    with pytest.raises(ConfigError, match="classifier_pooling"):
        resolve(cfg)
