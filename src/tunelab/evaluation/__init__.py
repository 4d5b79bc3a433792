"""Evaluation: run a model over a tokenised split and score it with the task's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from tunelab.inference.predict import predict_outputs
from tunelab.tasks.spec import Predicted, TaskSpec

if TYPE_CHECKING:  # accelerate enters at training and batched inference; evaluation only passes it on
    from accelerate import Accelerator


def evaluate(
    model: torch.nn.Module,
    task: TaskSpec,
    features: Any,
    collator: Any,
    labels: Sequence[str],
    batch_size: int,
    accelerator: Accelerator | None = None,
    *,
    params: Any = None,
    examples: Any = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Task metrics (plus ``loss`` and ``n_examples``) of ``model`` on ``features``.

    ``features`` carry the targets; ``examples`` are the raw rows they came from, for tasks whose
    metrics need them (e.g. QA gold answers). ``params`` defaults to the task's default params.
    ``tokenizer`` decodes generated token ids (seq2seq); other tasks do without.
    """
    params = params if params is not None else task.params()
    outputs = predict_outputs(model, task, features, collator, batch_size, accelerator, params)
    predicted = Predicted(outputs.arrays, features, examples, labels, params, tokenizer)
    n_examples = len(examples) if examples is not None else len(features)
    return {**task.metrics(predicted), "loss": outputs.loss, "n_examples": n_examples}
