"""Single-label text classification (sentiment, topic, intent): softmax head + cross-entropy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from tunelab.config import DataConfig
from tunelab.data import Columns, TaskData, load_labeled_data, load_labeled_file
from tunelab.tasks.spec import Batch, Features, Predicted, TaskSpec


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] | None = Field(
        default=None,
        min_length=2,
        description="Label names in id order; default: sorted labels of the train file.",
    )
    max_length: int = Field(default=128, gt=0, le=8192, description="Truncate inputs to this many tokens.")


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Checked CSV/JSONL/Parquet table splits with ``text`` (+ ``text_pair``) and ``label`` columns."""
    return load_labeled_data(cfg, params.labels, seed)


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One checked labelled table; a label outside ``labels`` is an error with file:line."""
    return load_labeled_file(path, columns, list(labels))


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Tokenise without padding (the collator pads per batch) and map label names to ids."""
    features = tokenizer(
        batch["text"], batch.get("text_pair"), truncation=True, max_length=params.max_length, padding=False
    )
    out: Features = dict(features)
    if "label" in batch:
        out["labels"] = [label2id[label] for label in batch["label"]]
    return out


def collator(tokenizer: Any, params: Params) -> DataCollatorWithPadding:
    """Dynamic padding to the longest row of each batch (multiples of 8 help GPU tensor cores)."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Predicted label plus the probability of every label."""
    labels = predicted.labels
    probs = softmax(predicted.arrays["logits"].astype(np.float64))
    return [
        {
            "label": labels[int(row.argmax())],
            "probabilities": {name: float(p) for name, p in zip(labels, row, strict=False)},
        }
        for row in probs
    ]


def metrics(predicted: Predicted) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    labels = predicted.labels
    gold = np.asarray(predicted.features["labels"])
    pred = predicted.arrays["logits"].argmax(axis=-1)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support, strict=False)
        },
        "confusion_matrix": confusion_matrix(gold, pred, labels=ids).tolist(),
        "majority_baseline_accuracy": float(
            np.bincount(gold, minlength=len(labels)).max() / max(len(gold), 1)
        ),
    }


TASK = TaskSpec(
    name="classification",
    params=Params,
    model_class=AutoModelForSequenceClassification,
    head_modules=("classifier", "score"),
    metric_names=("accuracy", "macro_f1"),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
)
