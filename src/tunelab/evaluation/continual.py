"""Forgetting: a continual run's model scored on the previous task's dev and test splits.

The previous task is scored task-aware: its metrics read only its own label columns of the grown
head (the first ``len(previous.labels)``), the question "does the model still tell A's labels
apart?". ``accuracy_all_labels`` is the class-incremental view (the argmax over every label, so an
A row predicted as one of B's labels is wrong), ``accuracy_before`` the previous run's own score
on the same split (its ``best/metrics.json``) and ``forgetting`` the drop from it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from tunelab.inference.predict import predict_outputs
from tunelab.methods.spec import PreviousTask
from tunelab.tasks.spec import Predicted, TaskSpec


def restricted_logits(logits: np.ndarray, n_labels: int) -> np.ndarray:
    """The first ``n_labels`` columns: the previous task's labels in the grown head."""
    return logits[..., :n_labels]


def previous_task_metrics(
    model: torch.nn.Module, task: TaskSpec, previous: PreviousTask, batch_size: int
) -> dict[str, dict[str, Any]]:
    """``previous_dev`` / ``previous_test`` sections of a continual run's report (see module doc)."""
    before_file = previous.run / "best" / "metrics.json"
    before = json.loads(before_file.read_text(encoding="utf-8")) if before_file.is_file() else {}
    n = len(previous.labels)
    out: dict[str, dict[str, Any]] = {}
    for split, features in (("dev", previous.dev), ("test", previous.test)):
        if features is None:
            continue
        outputs = predict_outputs(model, task, features, previous.collator, batch_size, None, previous.params)
        logits = outputs.arrays["logits"]
        arrays = {**outputs.arrays, "logits": restricted_logits(logits, n)}
        predicted = Predicted(arrays, features, previous.examples[split], previous.labels, previous.params)
        metrics = task.metrics(predicted)
        metrics.pop("confusion_matrix", None)  # the report plots this run's labels, not the previous ones
        gold = np.asarray(features["labels"])
        metrics["accuracy_all_labels"] = float((logits.argmax(-1) == gold).mean())
        accuracy_before = before.get(split, {}).get("accuracy")
        if accuracy_before is not None:
            metrics["accuracy_before"] = accuracy_before
            metrics["forgetting"] = accuracy_before - metrics["accuracy"]
        out[f"previous_{split}"] = metrics
    return out
