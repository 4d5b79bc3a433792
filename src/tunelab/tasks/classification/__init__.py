"""Text classification (sentiment, topic, intent): single-label softmax or multi-label sigmoid heads.

Single-label rows train with cross-entropy, multi-label rows (a list of labels each) with per-label
binary cross-entropy and predict every label whose probability reaches ``threshold``. Either loss can
weight labels (``class_weights``) for skewed data; the weights reach every method through
``TaskSpec.loss``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.utils.class_weight import compute_class_weight
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from tunelab.config import DataConfig
from tunelab.data import Columns, TaskData, load_labeled_data, load_labeled_file
from tunelab.data.checks import label_balance
from tunelab.errors import ConfigError
from tunelab.tasks.classification.schema import LABEL_SCHEMA, ClassificationRequest
from tunelab.tasks.spec import Batch, Explainable, Features, Predicted, TaskSpec, encoding_words

MULTI_LABEL = "multi_label_classification"  # transformers' problem_type for a sigmoid/BCE head

logger = logging.getLogger(__name__)


class Params(BaseModel):
    """Options of the classification task (validated from ``task.params``).

    ``fit`` makes the label order and the class weights explicit, so a saved run reproduces its loss.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] | None = Field(
        default=None,
        min_length=2,
        description="Label names in id order; default: sorted labels of the train file.",
    )
    max_length: int = Field(default=128, gt=0, le=8192, description="Truncate inputs to this many tokens.")
    multi_label: bool = Field(
        default=False, description="Rows carry a list of labels; sigmoid head, one decision per label."
    )
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Multi-label: predict every label with probability >= this."
    )
    label_separator: str = Field(
        default="|", min_length=1, description="Multi-label: separator of labels in a CSV/Parquet cell."
    )
    class_weights: Literal["auto", "none", "balanced"] | dict[str, PositiveFloat] = Field(
        default="auto",
        description="Loss weight per label: auto (balanced when single-label train labels are skewed, "
        "else none), none, balanced (n / (k * count) on train), or {label: weight}.",
    )
    classifier_pooling: Literal["cls", "mean"] | None = Field(
        default=None,
        description="How the head pools the tokens, on models whose config has classifier_pooling "
        "(ModernBERT): the first token (cls) or the mean of all; None keeps the model's. Others refuse it.",
    )


def _separator(params: Params) -> str | None:
    return params.label_separator if params.multi_label else None


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Checked CSV/JSONL/Parquet table splits with ``text`` (+ ``text_pair``) and ``label`` columns."""
    return load_labeled_data(cfg, params.labels, seed, _separator(params))


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One checked labelled table; a label outside ``labels`` is an error with file:line."""
    return load_labeled_file(path, columns, list(labels), _separator(params))


def read_single_label(path: Path, columns: Columns, params: Any, labels: Sequence[str]) -> Any:
    """``read_eval`` for one label per row: a label outside ``labels`` is an error with file:line."""
    return load_labeled_file(path, columns, list(labels))


def label_texts(key: str, given: Mapping[str, str] | None, labels: Sequence[str]) -> dict[str, str]:
    """A text per label (verbalizer, description): ``given``'s, else the label's own name.

    Naming a label that does not exist is a ConfigError keyed ``task.params.<key>``.
    """
    given = given or {}
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise ConfigError(f"task.params.{key}: unknown labels {unknown}; valid labels: {', '.join(labels)}")
    return {name: given.get(name, name) for name in labels}


def predict_single_label(predicted: Predicted) -> list[dict[str, Any]]:
    """``postprocess`` of single-label tasks: best label and the softmax over the logits."""
    return single_label_predictions(predicted.arrays["logits"], predicted.labels)


def _names(label: str | list[str]) -> list[str]:
    return [label] if isinstance(label, str) else list(label)


def auto_class_weights(params: Params, train: Any, labels: Sequence[str]) -> Literal["none", "balanced"]:
    """What ``class_weights: auto`` means for this train split: balanced on skewed single-label data.

    Skewed is ``LabelBalance.skewed`` (imbalanced, or a label under RARE_ROWS rows). There unweighted
    cross-entropy kept MiniLM on the majority label for most of a run, and balanced weights raised
    full fine-tuning's test macro-F1 on both measured sets, LoRA's moving within one seed's noise
    (bench/RESULTS.md, "Skewed and many-label data"). On balanced labels the weights would be about 1
    anyway, so none keeps the plain loss. Multi-label weights scale whole per-label BCE terms,
    unmeasured here, so they stay none.
    """
    balance = label_balance(train["label"], labels)
    choice: Literal["none", "balanced"] = "balanced" if balance.skewed and not params.multi_label else "none"
    logger.info(
        "task.params.class_weights auto: %s (train labels %s)",
        choice,
        "skewed" if balance.skewed else "balanced",
    )
    return choice


def fit(params: Params, train: Any, labels: Sequence[str]) -> Params:
    """Label order and class weights made explicit, so the saved run reproduces the loss exactly.

    ``auto`` becomes none or balanced (``auto_class_weights``). ``balanced`` is sklearn's
    ``n_samples / (n_classes * count)`` over the train labels (each label of a multi-label row counts
    once); labels absent from train keep weight 1. A ``{label: weight}`` map may leave labels out
    (weight 1) but may not name unknown ones.
    """
    weights = params.class_weights
    if weights == "auto":
        weights = auto_class_weights(params, train, labels)
    if weights == "balanced":
        seen = [name for label in train["label"] for name in _names(label)]
        present = np.array(sorted(set(seen)))
        values = compute_class_weight("balanced", classes=present, y=np.array(seen))
        fitted = dict(zip(present.tolist(), values.tolist(), strict=True))
        weights = {name: fitted.get(name, 1.0) for name in labels}
    elif isinstance(weights, dict):
        unknown = sorted(set(weights) - set(labels))
        if unknown:
            raise ConfigError(
                f"task.params.class_weights: unknown labels {unknown}; valid labels: {', '.join(labels)}"
            )
        weights = {name: weights.get(name, 1.0) for name in labels}
    return params.model_copy(update={"labels": list(labels), "class_weights": weights})


def model_config(params: Params) -> dict[str, Any]:
    """``problem_type`` in config.json: any reader (HF pipelines too) then applies sigmoid or softmax.

    ``classifier_pooling`` too when set: a small encoder pretrained by MLM alone never trained its
    first token as a summary, and on 259 Chinese intent rows mean pooling scored higher
    (examples/apps/customer_service/intent_zh.yaml).
    """
    problem = MULTI_LABEL if params.multi_label else "single_label_classification"
    pooling = {} if params.classifier_pooling is None else {"classifier_pooling": params.classifier_pooling}
    return {"problem_type": problem, **pooling}


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Tokenise without padding (the collator pads per batch); labels become ids or multi-hot rows."""
    features = tokenizer(
        batch["text"], batch.get("text_pair"), truncation=True, max_length=params.max_length, padding=False
    )
    out: Features = dict(features)
    if "label" in batch and params.multi_label:
        out["labels"] = [_multi_hot(names, label2id) for names in batch["label"]]
    elif "label" in batch:
        out["labels"] = [label2id[label] for label in batch["label"]]
    return out


def _multi_hot(names: Sequence[str], label2id: Mapping[str, int]) -> list[float]:
    row = [0.0] * len(label2id)
    for name in names:
        row[label2id[name]] = 1.0
    return row


def collator(tokenizer: Any, params: Params) -> DataCollatorWithPadding:
    """Dynamic padding to the longest row of each batch (multiples of 8 help GPU tensor cores)."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)


def loss(
    outputs: Any, batch: Mapping[str, torch.Tensor], params: Params, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy (single-label) or mean per-label BCE (multi-label), weighted by ``class_weights``.

    Weighted cross-entropy is torch's weighted mean: sum(w_y * nll) / sum(w_y) over the batch.
    ``label_smoothing`` ε is torch's for cross-entropy; multi-label targets move to ε/2 and 1 - ε/2.
    """
    logits = outputs.logits
    weight = None
    if isinstance(params.class_weights, dict):
        assert params.labels is not None, "fit() fills labels whenever class weights are set"
        weight = torch.tensor(
            [params.class_weights[name] for name in params.labels], dtype=logits.dtype, device=logits.device
        )
    if params.multi_label:
        targets = batch["labels"].to(logits.dtype) * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weight)
    return F.cross_entropy(logits, batch["labels"], weight=weight, label_smoothing=label_smoothing)


def loss_terms(outputs: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Evaluation loss: summed unweighted cross-entropy, or per-label BCE over multi-hot targets."""
    if "labels" not in batch:
        return None
    logits, gold = outputs.logits.float(), batch["labels"]
    if gold.shape == logits.shape:
        return F.binary_cross_entropy_with_logits(logits, gold.float(), reduction="sum"), gold.new_tensor(
            gold.numel()
        )
    return F.cross_entropy(logits, gold, reduction="sum"), gold.new_tensor(gold.numel())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probs


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, stable for large negative logits."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def single_label_predictions(logits: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per row: the highest-scoring label and the softmax probability of every label."""
    return [
        {"label": labels[int(row.argmax())], "probabilities": dict(zip(labels, row.tolist(), strict=True))}
        for row in softmax(logits.astype(np.float64))
    ]


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Most probable label plus every label's probability; multi-label adds ``labels`` >= threshold."""
    logits, labels, params = predicted.arrays["logits"], predicted.labels, predicted.params
    if not params.multi_label:
        return single_label_predictions(logits, labels)
    out = []
    for row in sigmoid(logits.astype(np.float64)):
        order = np.argsort(-row, kind="stable")
        out.append(
            {
                "label": labels[int(order[0])],
                "labels": [labels[int(i)] for i in order if row[i] >= params.threshold],
                "probabilities": dict(zip(labels, row.tolist(), strict=True)),
            }
        )
    return out


def _per_class(gold: np.ndarray, pred: np.ndarray, names: Sequence[str], **kw: Any) -> dict[str, Any]:
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, zero_division=0, **kw)
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }


def _f1(gold: np.ndarray, pred: np.ndarray, average: str, **kw: Any) -> float:
    return float(f1_score(gold, pred, average=average, zero_division=0, **kw))


def metrics(predicted: Predicted) -> dict[str, Any]:
    """Accuracy, macro/micro-F1, per-class P/R/F1, and the majority baseline on the same rows.

    Single-label adds the confusion matrix; the baseline always predicts the most frequent label.
    Multi-label accuracy is subset accuracy (every label of a row right); the baseline always
    predicts the most frequent label set.
    """
    logits, labels = predicted.arrays["logits"], predicted.labels
    gold = np.asarray(predicted.features["labels"])
    if gold.ndim == 2:
        return _multi_label_metrics(logits, gold.astype(int), labels, predicted.params.threshold)
    pred = logits.argmax(axis=-1)
    ids = list(range(len(labels)))
    majority = np.full_like(gold, np.bincount(gold, minlength=len(labels)).argmax()) if len(gold) else gold
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": _f1(gold, pred, "macro", labels=ids),
        "micro_f1": _f1(gold, pred, "micro", labels=ids),
        "per_class": _per_class(gold, pred, labels, labels=ids),
        "confusion_matrix": confusion_matrix(gold, pred, labels=ids).tolist(),
        "majority_baseline_accuracy": float(accuracy_score(gold, majority)) if len(gold) else 0.0,
        "majority_baseline_macro_f1": _f1(gold, majority, "macro", labels=ids),
    }


def _multi_label_metrics(
    logits: np.ndarray, gold: np.ndarray, labels: Sequence[str], threshold: float
) -> dict[str, Any]:
    pred = (sigmoid(logits.astype(np.float64)) >= threshold).astype(int)
    top_set = Counter(map(tuple, gold.tolist())).most_common(1)[0][0] if len(gold) else ()
    majority = np.tile(np.array(top_set, dtype=int), (len(gold), 1)).reshape(gold.shape)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": _f1(gold, pred, "macro"),
        "micro_f1": _f1(gold, pred, "micro"),
        "per_class": _per_class(gold, pred, labels),
        "majority_baseline_accuracy": float(accuracy_score(gold, majority)) if len(gold) else 0.0,
        "majority_baseline_macro_f1": _f1(gold, majority, "macro"),
        "threshold": threshold,
    }


def explain_input(record: Mapping[str, Any], tokenizer: Any, params: Params) -> Explainable:
    """The record's text as the model reads it; words are the tokenizer's own pre-tokenized words."""
    text = record["text"]
    enc = tokenizer(text, truncation=True, max_length=params.max_length, return_offsets_mapping=True)
    offsets, word_ids = enc.pop("offset_mapping"), encoding_words(enc)
    n = max(word_ids) + 1
    starts, ends = [len(text)] * n, [0] * n
    for w, (start, end) in zip(word_ids, offsets, strict=True):
        if w >= 0:
            starts[w], ends[w] = min(starts[w], start), max(ends[w], end)
    spans = list(zip(starts, ends, strict=True))
    return Explainable(dict(enc), word_ids, [text[a:b] for a, b in spans], spans, text)


TASK = TaskSpec(
    name="classification",
    params=Params,
    model_class=AutoModelForSequenceClassification,
    head_modules=("classifier", "score"),
    metric_names=("accuracy", "macro_f1", "micro_f1"),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
    loss_terms=loss_terms,
    loss=loss,
    fit=fit,
    model_config=model_config,
    few_shot=True,
    augmentable=True,
    serve_schema=dataclasses.replace(LABEL_SCHEMA, request=ClassificationRequest),
    hf_architecture="ForSequenceClassification",
    pipeline_tag="text-classification",
    explain_input=explain_input,
)
