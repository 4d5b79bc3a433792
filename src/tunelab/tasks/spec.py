"""TaskSpec: what a task contributes (data reader, model class, preprocessing, postprocessing, metrics).

The training loop, evaluation, export and serving only ever call these functions, so a new task
(NER, extractive QA, language-model pretraining) is one file under ``tasks/`` plus one registry line.
The contract every task follows:

- ``load_data`` reads the task's own input kind into raw *examples* (``datasets.Dataset`` splits).
- ``preprocess`` turns a batch of examples into *features*. The batch always carries ``example_id``
  (the example's index in its split); a task that emits several features per example (long inputs
  split into chunks, QA doc stride) copies it into each feature. Features may hold columns the model
  does not take (``example_id``, word ids, offset mappings); the task's collator drops them.
- ``outputs`` turns a model output into named per-row tensors (``logits`` by default; QA start/end).
  Evaluation gathers them across batches and processes, padding ragged axes with ``OUTPUT_PAD``.
- ``loss_terms`` gives (summed loss, number of targets) per batch, so the eval loss is the exact mean
  over every target of the split (tokens labelled -100 do not count).
- ``postprocess`` and ``metrics`` see a :class:`Predicted`: the gathered arrays, the features, the raw
  examples, the label names and the task params.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

logger = logging.getLogger(__name__)

Batch = dict[str, list[Any]]
Features = dict[str, list[Any]]
Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]
OUTPUT_PAD = 0.0  # value of gathered output positions past a row's own length; tasks mask by length
IGNORE_INDEX = -100  # target id that no loss or metric counts (transformers' convention)


@dataclass(frozen=True)
class Predicted:
    """Everything a task's ``postprocess`` and ``metrics`` may need, for one split or request.

    Attributes:
        arrays: output name -> (n_features, ...) array, rows in feature order, ragged axes padded.
        features: the tokenised rows, column access (``datasets.Dataset`` or a dict of lists).
        examples: the raw examples the features came from, column access; None when not at hand.
        labels: label names in id order (empty for label-free tasks).
        params: the task's validated params.
        tokenizer: the model's tokenizer, for tasks whose outputs are token ids to decode (seq2seq).
    """

    arrays: Mapping[str, np.ndarray]
    features: Any
    examples: Any
    labels: Sequence[str]
    params: Any
    tokenizer: Any = None


def logits_output(outputs: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The default ``outputs``: the model's ``logits``."""
    return {"logits": outputs.logits}


def cross_entropy_terms(
    outputs: Any, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Summed cross-entropy of ``logits`` against ``labels`` and the number of counted targets.

    Works for one label per row ((B, C) vs (B,)) and one per token ((B, T, C) vs (B, T)); targets
    equal to ``IGNORE_INDEX`` count in neither. None when the batch has no ``labels``.
    """
    if "labels" not in batch:
        return None
    logits, gold = outputs.logits.float(), batch["labels"]
    total = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, (gold != IGNORE_INDEX).sum()


def count_rows(batch: Mapping[str, torch.Tensor], params: Any) -> torch.Tensor:
    """Targets of a sample-level task: one per row (its loss is a mean over rows)."""
    return torch.tensor(len(batch["input_ids"]))


def count_labelled_tokens(batch: Mapping[str, torch.Tensor], params: Any) -> torch.Tensor:
    """Targets of a token-level task: every label that is not ``IGNORE_INDEX``."""
    return (batch["labels"] != IGNORE_INDEX).sum()


@dataclass(frozen=True)
class TaskSpec:
    """A task as plain functions; behaviour comes from composition, not subclassing.

    Attributes:
        name: registry name.
        params: pydantic model validating ``task.params`` (``labels``: label order, or None).
        model_class: transformers Auto class whose ``from_pretrained`` builds backbone + head.
        head_modules: names of freshly initialised head modules (methods keep them trainable).
        metric_names: metrics ``metrics`` returns; ``train.metric_for_best_model`` must be one of them.
        load_data: (data config, params, seed) -> ``tunelab.data.TaskData`` of raw examples; every
            bad row reported at once with file:line.
        read_eval: (path, columns, params, labels) -> one checked labelled file of examples
            (``tunelab eval``, ``export --eval-data``).
        input_fields: the fields of one raw prediction record (``{"text": ...}`` for text tasks).
        preprocess: batched and pure: (examples, tokenizer, params, label2id) -> features.
        collator: (tokenizer, params) -> callable padding a list of feature dicts into a tensor batch,
            dropping the columns the model does not take. It may draw random numbers (MLM masking);
            evaluation seeds them, so every evaluation of a run sees the same batches.
        postprocess: ``Predicted`` -> one JSON-able prediction per example, in example order.
        metrics: ``Predicted`` (with gold in features or examples) -> metric dict.
        outputs: (model output, batch) -> name -> (B, ...) tensor to gather; default ``logits``.
        loss_terms: (model output, batch) -> (summed loss, target count) or None without targets.
        target_keys: batch keys holding targets; evaluation keeps them out of the forward.
        loss: (model outputs, batch, params, label_smoothing) -> training loss; None means the model's
            own loss (cross-entropy, smoothed by the trainer when ``train.label_smoothing`` > 0).
            Methods compute their hard loss through it, so e.g. class weights hold under every method.
        fit: (params, train examples, label names) -> params with data-dependent values made explicit
            (e.g. balanced class weights), so the saved run records and reproduces them; None: as is.
        model_config: params -> extra config for ``from_pretrained`` (e.g. ``problem_type``), saved in
            the model's config.json so every reader of the model sees it.
        check_model: (loaded model's config, params) -> None; raises ConfigError when the model cannot
            serve these params (e.g. a causal-LM objective on an encoder).
        train_collator: (tokenizer, params) -> the collator of training batches when it differs from
            ``collator`` (e.g. sequence packing, whose rows are not examples); None: ``collator``.
        count_targets: (collated training batch, params) -> number of targets its loss averages over
            (rows for sample-level tasks, labelled tokens for token-level ones). The loop weights each
            micro-batch by it, so gradient accumulation and several ranks give the global mean.
        generation_prompt: (raw record, tokenizer, params) -> prompt text, for tasks whose predictions
            are generated continuations (``tunelab.evaluation.generate``); None: forward + postprocess.
        generate: (model, batch without targets, params) -> named per-row tensors of generated output
            (token ids, lengths), gathered beside ``outputs`` at evaluation and prediction, for tasks
            whose predictions are generated from tokenised inputs (seq2seq). A batch without targets
            (prediction) then skips the forward. None: forward only.
    """

    name: str
    params: type[BaseModel]
    model_class: Any
    head_modules: tuple[str, ...]
    metric_names: tuple[str, ...]
    load_data: Callable[[Any, Any, int], Any]
    read_eval: Callable[[Any, Any, Any, Sequence[str]], Any]
    preprocess: Callable[[Batch, Any, Any, Mapping[str, int]], Features]
    collator: Callable[[Any, Any], Collate]
    postprocess: Callable[[Predicted], list[dict[str, Any]]]
    metrics: Callable[[Predicted], dict[str, Any]]
    input_fields: tuple[str, ...] = ("text",)
    outputs: Callable[[Any, Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] = logits_output
    loss_terms: Callable[[Any, Mapping[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor] | None] = (
        cross_entropy_terms
    )
    target_keys: tuple[str, ...] = ("labels",)
    loss: Callable[[Any, Mapping[str, torch.Tensor], Any, float], torch.Tensor] | None = None
    fit: Callable[[Any, Any, Sequence[str]], Any] | None = None
    model_config: Callable[[Any], dict[str, Any]] | None = None
    check_model: Callable[[Any, Any], None] | None = None
    train_collator: Callable[[Any, Any], Collate] | None = None
    count_targets: Callable[[Mapping[str, torch.Tensor], Any], torch.Tensor] = count_rows
    generation_prompt: Callable[[Mapping[str, Any], Any, Any], str] | None = None
    generate: Callable[[Any, Mapping[str, torch.Tensor], Any], dict[str, torch.Tensor]] | None = None


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the non-padding token vectors, L2-normalised (sentence-transformers' sentence embedding).

    (B, T, H), (B, T) -> (B, H); unit norm, so a dot product is the cosine similarity.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` and ``label2id`` as transformers configs store them."""
    return dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}


def has_column(data: Any, name: str) -> bool:
    """Whether ``data`` (a ``datasets.Dataset`` or a dict of columns) has column ``name``."""
    return name in (data.column_names if hasattr(data, "column_names") else data)


def without_columns(collate: Collate, names: Sequence[str]) -> Collate:
    """``collate`` applied to rows stripped of ``names`` (feature columns the model does not take)."""
    drop = frozenset(names)

    def collate_model_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return collate([{k: v for k, v in row.items() if k not in drop} for row in rows])

    return collate_model_columns


def load_with_labels(
    task: TaskSpec, model_dir: Any, labels: Sequence[str], params: Any = None, **kwargs: Any
) -> Any:
    """``task.model_class`` from ``model_dir`` with a head sized for ``labels``, in fp32.

    Label-free tasks (QA, language modelling) pass no labels and keep the class's own head size.
    A freshly initialised head is what fine-tuning starts from, so transformers' "newly initialized"
    warning is silenced here. ``kwargs`` go to ``from_pretrained`` (e.g. ``trust_remote_code``), after
    the task's ``model_config(params)``.
    """
    from transformers import logging as hf_logging

    extra = task.model_config(params if params is not None else task.params()) if task.model_config else {}
    kwargs = {**extra, **kwargs}

    if labels:
        id2label, label2id = label_maps(labels)
        kwargs = {**kwargs, "num_labels": len(labels), "id2label": id2label, "label2id": label2id}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return task.model_class.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def tokenize_dataset(task: TaskSpec, params: Any, tokenizer: Any, data: Any, labels: Sequence[str]) -> Any:
    """Apply ``task.preprocess`` batched over a ``datasets.Dataset`` of examples, keeping only features.

    Each example gets its ``example_id`` (row index) first. When a task emits several features for
    one example (an input longer than the model takes, split rather than truncated), this logs how
    many examples were split.
    """
    _, label2id = label_maps(labels)
    indexed = data.map(lambda _, i: {"example_id": i}, with_indices=True, keep_in_memory=True, desc="index")
    features = indexed.map(
        lambda batch: task.preprocess(batch, tokenizer, params, label2id),
        batched=True,
        remove_columns=indexed.column_names,
        keep_in_memory=True,
        desc="tokenize",
    )
    if len(features) > len(data) and "example_id" in features.column_names:
        counts = np.bincount(np.asarray(features["example_id"]), minlength=len(data))
        logger.info(
            "%d of %d examples are longer than the model takes and were split into %d features "
            "(nothing truncated)",
            int((counts > 1).sum()),
            len(data),
            len(features),
        )
    return features
