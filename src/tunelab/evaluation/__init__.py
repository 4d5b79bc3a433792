"""Evaluation: run a model over a tokenised split and score it with the task's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from tunelab.evaluation.predict import predict_logits, token_loss_sum
from tunelab.tasks.spec import TaskSpec


def evaluate(
    model: torch.nn.Module,
    task: TaskSpec,
    features: Any,
    collator: Any,
    labels: Sequence[str],
    batch_size: int,
    accelerator: Accelerator | None = None,
) -> dict[str, Any]:
    """Task metrics (plus ``loss``) of ``model`` on ``features``, which must carry ``labels``.

    Text-only tasks (language modelling) are scored from the summed token loss instead of logits.
    """
    if task.text_only:
        assert task.token_loss is not None
        assert task.token_metrics is not None
        loss_sum, n_tokens = token_loss_sum(
            model, task.token_loss, features, collator, batch_size, accelerator
        )
        return {**task.token_metrics(loss_sum, n_tokens), "loss": loss_sum / max(n_tokens, 1)}
    logits = predict_logits(model, features, collator, batch_size, accelerator)
    gold = np.asarray(features["labels"])
    return {
        **task.metrics(logits, gold, labels),
        "loss": cross_entropy(logits, gold),
        "n_examples": len(gold),
    }


def cross_entropy(logits: np.ndarray, gold: np.ndarray) -> float:
    """Mean token/example cross-entropy from logits, computed once over the gathered set."""
    return float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(gold)).item())
