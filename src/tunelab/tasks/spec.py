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
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel

from tunelab.models.load import label_maps, load_pretrained
from tunelab.tasks.schemas import ServeSchema

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


@dataclass(frozen=True)
class Explainable:
    """One prediction record as explanation code sees it (``TaskSpec.explain_input``).

    Attributes:
        features: one unpadded model row (``input_ids``, ``attention_mask``...): the first chunk of an
            input the task would split, so words past ``max_length`` tokens get no attribution.
        word_ids: per token of ``features``, the index of the word it belongs to; -1 for special tokens.
        words: the words shown to the user, in text order (their sub-word pieces are merged).
        spans: each word's (start, end) character offsets in ``text``.
        text: the text the spans index (a pre-split input's words joined by spaces).
    """

    features: dict[str, list[int]]
    word_ids: list[int]
    words: list[str]
    spans: list[tuple[int, int]]
    text: str


def encoding_words(encoding: Any) -> list[int]:
    """Per token of a fast tokenizer's one-row encoding: its word index, -1 for special tokens."""
    return [-1 if w is None else int(w) for w in encoding.word_ids(0)]


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


class TaskLoss(Protocol):
    """A task's training loss; the trainer binds ``params`` and ``label_smoothing`` by name."""

    def __call__(
        self, outputs: Any, batch: Mapping[str, torch.Tensor], params: Any, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """The scalar loss of one micro-batch, a mean over its targets."""
        ...


class CountTargets(Protocol):
    """Targets a collated training batch's loss averages over; the loop binds ``params`` by name."""

    def __call__(self, batch: Mapping[str, torch.Tensor], params: Any) -> torch.Tensor:
        """A 0-d integer tensor: rows (sample-level tasks) or labelled tokens (token-level ones)."""
        ...


@dataclass(frozen=True)
class TaskSpec:
    """A task as plain functions; behaviour comes from composition, not subclassing.

    Attributes:
        name: registry name.
        params: pydantic model validating ``task.params`` (``labels``: label order, or None).
        model_class: transformers Auto class (or tunelab's own model class) that builds backbone + head.
        head_modules: names of freshly initialised head modules (methods keep them trainable).
        metric_names: metrics ``metrics`` returns; ``train.metric_for_best_model`` must be one of them.
        load_data: (data config, params, seed) -> ``tunelab.data.TaskData`` of raw examples; every
            bad row reported at once with file:line.
        read_eval: (path, columns, params, labels) -> one checked labelled file of examples
            (``tunelab eval``, ``export --eval-data``).
        input_fields: the fields of one raw prediction record (``{"text": ...}`` for text tasks).
        input_options: optional fields a prediction record may carry besides ``input_fields`` (a
            request's per-input options, e.g. retrieval's ``top_k``); ``predict_records`` passes them on
            in the examples, None where a record lacks one, and only ``postprocess`` reads them.
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
        model_config: params -> extra model config values (e.g. ``problem_type``), saved in
            the model's config.json so every reader of the model sees it.
        check_model: (loaded model's config, params) -> None; raises ConfigError when the model cannot
            serve these params (e.g. a causal-LM objective on an encoder).
        train_collator: (tokenizer, params) -> the collator of training batches when it differs from
            ``collator`` (e.g. sequence packing, whose rows are not examples); None: ``collator``.
        count_targets: (collated training batch, params) -> number of targets its loss averages over
            (rows for sample-level tasks, labelled tokens for token-level ones). The loop weights each
            micro-batch by it, so gradient accumulation and several ranks give the global mean.
        generation_prompt: (raw record, tokenizer, params) -> prompt text, for tasks whose predictions
            are generated continuations (``tunelab.inference.generate``); None: forward + postprocess.
        generation: params -> decoding options (``max_new_tokens``, ``num_beams``...) for tasks whose
            predictions are generated from tokenised inputs (seq2seq): evaluation and prediction then
            gather ``generated_ids`` / ``generated_length`` (``tunelab.inference.generate``) beside
            ``outputs``, and a batch without targets (prediction) skips the forward. None: forward only.
        from_scratch: params -> whether the run builds its own tokenizer and model (``model.name_or_path:
            scratch``) instead of loading a pretrained one. None: never.
        check_input: (raw prediction record, params) -> why the model cannot take it (e.g. raw text it
            cannot split as its training words were), or None. The server answers 422 before queueing,
            so one unusable input never fails the micro-batch it would share. None: the schema suffices.
        predict_preprocess: (batch of raw prediction records, tokenizer, params) -> features, for a task
            whose prediction inputs are cut differently from its training examples (lm_pretrain packs
            training texts into blocks, but predicts one feature per record); None: ``preprocess``.
        init_model: (params, raw ``TaskData``, base model dir, dest, seed) -> the directory the run
            starts from: ``dest`` after building a model there (from scratch, or warm-started from the
            base), else the base dir unchanged. Built once; a resumed run reuses ``dest``. None: the base.

    Capabilities, read by planning, export and serving instead of comparing task names:

    Attributes:
        few_shot: one label per row, so ``data.k_shot`` can sample k rows per label.
        zero_shot: the untrained model already scores labels (``data.k_shot: 0`` trains nothing).
        augmentable: one label per text, so word edits (``data.augment``) keep the label true.
        serve_schema: the ``/v1/predict`` request/response of this task; None: not served there.
        hf_architecture: suffix of the ``architectures`` of a plain Hugging Face directory (no
            ``tunelab_run.json``) that this task loads, e.g. ``ForSequenceClassification``.
        pipeline_tag: the Hugging Face Hub pipeline tag written into exported model cards.
        why_no_logits: None when the model gives one logits tensor per batch that soft-target methods
            (distillation, R-Drop) can compare; else why not (shown in their refusal).
        own_architecture: the model class is tunelab's own, so a saved directory of it loads only
            through tunelab's artifact reader, not as the transformers class its config names.
        explain_input: (raw prediction record, tokenizer, params) -> :class:`Explainable`, the model
            row and the words ``tunelab explain`` and ``explain: true`` attribute to; None: the task's
            predictions cannot be explained.
        explain_words: (a record's prediction) -> the word indices whose predicted tags are explained by
            default, for a task that labels each word (NER: each entity's first word); None: the task
            predicts one label per input, and that label is explained.
        block_mask: ``block_mask(params)`` says why the batches built with these params carry a 4D
            attention mask (rows whose tokens see only some earlier tokens), with the param that
            turns it off; None: a 2D padding mask. Methods that join or read a padding mask refuse it.
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
    input_options: tuple[str, ...] = ()
    outputs: Callable[[Any, Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] = logits_output
    loss_terms: Callable[[Any, Mapping[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor] | None] = (
        cross_entropy_terms
    )
    target_keys: tuple[str, ...] = ("labels",)
    loss: TaskLoss | None = None
    fit: Callable[[Any, Any, Sequence[str]], Any] | None = None
    model_config: Callable[[Any], dict[str, Any]] | None = None
    check_model: Callable[[Any, Any], None] | None = None
    train_collator: Callable[[Any, Any], Collate] | None = None
    count_targets: CountTargets = count_rows
    generation_prompt: Callable[[Mapping[str, Any], Any, Any], str] | None = None
    generation: Callable[[Any], dict[str, Any]] | None = None
    from_scratch: Callable[[Any], bool] | None = None
    init_model: Callable[[Any, Any, Path, Path, int], Path] | None = None
    predict_preprocess: Callable[[Batch, Any, Any], Features] | None = None
    check_input: Callable[[Mapping[str, Any], Any], str | None] | None = None
    few_shot: bool = False
    zero_shot: bool = False
    augmentable: bool = False
    serve_schema: ServeSchema | None = None
    hf_architecture: str | None = None
    pipeline_tag: str | None = None
    why_no_logits: str | None = None
    own_architecture: bool = False
    block_mask: Callable[[Any], str | None] | None = None
    explain_input: Callable[[Mapping[str, Any], Any, Any], Explainable] | None = None
    explain_words: Callable[[Mapping[str, Any]], list[int]] | None = None


def has_column(data: Any, name: str) -> bool:
    """Whether ``data`` (a ``datasets.Dataset`` or a dict of columns) has column ``name``."""
    return name in (data.column_names if hasattr(data, "column_names") else data)


def without_columns(collate: Collate, names: Sequence[str]) -> Collate:
    """``collate`` applied to rows stripped of ``names`` (feature columns the model does not take)."""
    drop = frozenset(names)

    def collate_model_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return collate([{k: v for k, v in row.items() if k not in drop} for row in rows])

    return collate_model_columns


def model_config_overrides(task: TaskSpec, params: Any) -> dict[str, Any]:
    """The config values ``task`` sets on its model for ``params`` (saved in config.json); may be empty."""
    return task.model_config(params if params is not None else task.params()) if task.model_config else {}


def load_with_labels(
    task: TaskSpec, model_dir: Path, labels: Sequence[str], params: Any = None, **kwargs: Any
) -> Any:
    """``task.model_class`` from ``model_dir`` with a fresh head sized for ``labels``, in fp32.

    The task's config overrides for ``params`` are applied; ``kwargs`` go to ``models.load_pretrained``
    (e.g. ``trust_remote_code``).
    """
    overrides = model_config_overrides(task, params)
    return load_pretrained(task.model_class, model_dir, labels, **overrides, **kwargs)


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
