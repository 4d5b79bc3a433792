"""Tiny models, batches and gradient helpers shared by the distillation/adversarial/R-Drop tests."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from toy_tasks import toy_rows
from tunelab.methods.spec import Adapted, StepOutput

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def tiny_model(backbone: Path, labels: list[str], token_level: bool = False, **config) -> torch.nn.Module:
    """A tiny BERT with a fresh head for ``labels`` (sequence- or token-level)."""
    cls = AutoModelForTokenClassification if token_level else AutoModelForSequenceClassification
    return cls.from_pretrained(
        backbone,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        **config,
    )


def toy_batch(backbone: Path, n: int, num_labels: int, token_level: bool = False, seed: int = 5) -> dict:
    """A padded batch of toy texts; token labels are -100 on special tokens, padding and every 3rd token."""
    tok = AutoTokenizer.from_pretrained(backbone)
    texts = [text for text, _ in toy_rows(n, seed=seed)]
    batch = dict(tok(texts, padding=True, return_tensors="pt"))
    gen = torch.Generator().manual_seed(seed)
    if token_level:
        labels = torch.randint(0, num_labels, batch["input_ids"].shape, generator=gen)
        ignored = (batch["attention_mask"] == 0) | (batch["input_ids"] == tok.cls_token_id)
        ignored |= batch["input_ids"] == tok.sep_token_id
        ignored[:, ::3] = True
        batch["labels"] = labels.masked_fill(ignored, -100)
    else:
        batch["labels"] = torch.randint(0, num_labels, (n,), generator=gen)
    return batch


def run_step(step, adapted: Adapted, batch: dict) -> tuple[StepOutput, dict[str, torch.Tensor]]:
    """One micro-step on ``adapted`` (backward unscaled); returns its output and the parameter grads."""
    adapted.model.zero_grad(set_to_none=True)
    out = step(adapted, batch, lambda loss: loss.backward())
    grads = {n: p.grad.clone() for n, p in adapted.model.named_parameters() if p.grad is not None}
    return out, grads


def clone(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)


def assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=atol, msg=name)
