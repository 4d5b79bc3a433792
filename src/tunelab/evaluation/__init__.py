"""Evaluation: run a model over a tokenised split and score it with the task's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from tunelab.evaluation.predict import predict_logits
from tunelab.tasks.spec import TaskSpec


def evaluate(
    model: torch.nn.Module,
    task: TaskSpec,
    features: Any,
    collator: Any,
    labels: Sequence[str],
    batch_size: int,
    accelerator: Accelerator | None = None,
    params: Any = None,
) -> dict[str, Any]:
    """Task metrics (plus ``loss``) of ``model`` on ``features``, which must carry ``labels``.

    ``params`` are the task's (e.g. a multi-label threshold); None means the task's defaults.
    """
    logits = predict_logits(model, features, collator, batch_size, accelerator)
    gold = np.asarray(features["labels"])
    return {
        **task.metrics(logits, gold, labels, params if params is not None else task.params()),
        "loss": cross_entropy(logits, gold),
        "n_examples": len(gold),
    }


def cross_entropy(logits: np.ndarray, gold: np.ndarray) -> float:
    """Mean token/example cross-entropy from logits, computed once over the gathered set.

    Gold shaped like the logits is multi-hot (multi-label): binary cross-entropy per label then.
    """
    scores, target = torch.from_numpy(logits), torch.from_numpy(gold)
    if target.shape == scores.shape:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(scores, target.float()).item())
    return float(torch.nn.functional.cross_entropy(scores, target).item())
