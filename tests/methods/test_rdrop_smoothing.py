"""R-Drop (α = 0 is the default step; token masks hold) and label smoothing (-100 ignored)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from robust_helpers import NO_DROPOUT, assert_same_grads, clone, run_step, tiny_model, toy_batch
from tunelab.errors import ConfigError
from tunelab.methods import rdrop
from tunelab.methods.losses import model_logits, smoothed_cross_entropy, symmetric_kl
from tunelab.methods.spec import Adapted, default_step, model_loss
from tunelab.tasks import TASKS
from tunelab.training.setup import task_adapted

LABELS = ["a", "b", "c"]


@pytest.mark.parametrize("token_level", [False, True], ids=["seq", "token"])
def test_rdrop_alpha_zero_equals_the_default_step(tiny_backbone_dir, token_level):
    model = tiny_model(tiny_backbone_dir, LABELS, token_level, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 6, 3, token_level)
    plain, plain_grads = run_step(default_step, Adapted(model=clone(model)), batch)
    ours, grads = run_step(rdrop.step, rdrop.apply(model, rdrop.Params(alpha=0.0), ()), batch)
    torch.testing.assert_close(ours.loss, plain.loss)
    assert_same_grads(grads, plain_grads)


def test_rdrop_consistency_is_positive_with_dropout(tiny_backbone_dir):
    model = tiny_model(tiny_backbone_dir, LABELS, hidden_dropout_prob=0.3)
    model.train()
    out, _ = run_step(
        rdrop.step, rdrop.apply(model, rdrop.Params(alpha=1.0), ()), toy_batch(tiny_backbone_dir, 6, 3)
    )
    assert float(out.metrics["rdrop_kl"]) > 0


def test_symmetric_kl_matches_torch_and_ignores_masked_tokens():
    a, b = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    la, lb = F.log_softmax(a[mask], -1), F.log_softmax(b[mask], -1)
    ref = 0.5 * (
        F.kl_div(lb, la, log_target=True, reduction="batchmean")
        + F.kl_div(la, lb, log_target=True, reduction="batchmean")
    )
    torch.testing.assert_close(symmetric_kl(a, b, mask), ref)
    a2 = a.clone()
    a2[~mask] = 50.0
    torch.testing.assert_close(symmetric_kl(a2, b, mask), ref)


def test_smoothed_cross_entropy_matches_torch_on_tokens_with_ignored_labels():
    logits = torch.randn(2, 4, 3)
    labels = torch.tensor([[0, 2, -100, 1], [-100, -100, 1, 0]])
    keep = labels != -100
    ref = F.cross_entropy(logits[keep], labels[keep], label_smoothing=0.1)
    torch.testing.assert_close(smoothed_cross_entropy(logits, labels, 0.1), ref)
    assert smoothed_cross_entropy(logits, labels, 0.1) != F.cross_entropy(logits[keep], labels[keep])


@pytest.mark.parametrize("task_name", ["classification", "token_classification"])
def test_task_adapted_smooths_only_when_asked(tiny_backbone_dir, task_name):
    """Smoothing reaches a task's own loss (classification) and the model's default one alike."""
    task = TASKS.get(task_name)
    params = task.params(labels=LABELS)
    model = tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 4, 3)
    out = model(**batch)
    if task.loss is None:
        assert task_adapted(task, params, model).loss is model_loss
    plain = task_adapted(task, params, model).loss(out, batch)
    torch.testing.assert_close(plain, F.cross_entropy(out.logits, batch["labels"]))
    smoothed = task_adapted(task, params, model, 0.2).loss(out, batch)
    torch.testing.assert_close(smoothed, F.cross_entropy(out.logits, batch["labels"], label_smoothing=0.2))


def test_heads_without_one_logits_tensor_or_labels_are_refused_with_the_reason():
    qa_like = SimpleNamespace(start_logits=torch.zeros(2, 4), end_logits=torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="has no `logits`; distill, rdrop and train.label_smoothing need"):
        model_logits(qa_like)
    with pytest.raises(ConfigError, match="train.label_smoothing: this task's batches carry no `labels`"):
        smoothed_cross_entropy(torch.zeros(2, 3), None, 0.1)
