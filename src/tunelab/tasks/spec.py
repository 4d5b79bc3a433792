"""TaskSpec: what a task contributes (model class, preprocessing, postprocessing, metrics)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

Batch = dict[str, list[Any]]
Features = dict[str, list[Any]]


@dataclass(frozen=True)
class TaskSpec:
    """A task as plain functions; behaviour comes from composition, not subclassing.

    Attributes:
        name: registry name.
        params: pydantic model validating ``task.params``.
        model_class: transformers Auto class whose ``from_pretrained`` builds backbone + head.
        head_modules: names of freshly initialised head modules (methods keep them trainable).
        metric_names: metrics ``metrics`` returns; ``train.metric_for_best_model`` must be one of them.
        preprocess: batched and pure: raw columns -> model features (with ``labels`` when present).
        collator: tokenizer -> callable that pads a list of feature dicts into a tensor batch.
        postprocess: (logits, label names, params) -> one JSON-able prediction per example.
        metrics: (logits, gold label ids, label names, params) -> metric dict.
        loss: (model outputs, batch, params) -> training loss; None means the model's own loss.
            Methods compute their hard loss through it, so e.g. class weights hold under every method.
        fit: (params, train labels, label names) -> params with data-dependent values made explicit
            (e.g. balanced class weights), so the saved run records and reproduces them; None: as is.
        model_config: params -> extra config for ``from_pretrained`` (e.g. ``problem_type``), saved in
            the model's config.json so every reader of the model sees it.
    """

    name: str
    params: type[BaseModel]
    model_class: Any
    head_modules: tuple[str, ...]
    metric_names: tuple[str, ...]
    preprocess: Callable[[Batch, Any, Any, Mapping[str, int]], Features]
    collator: Callable[[Any], Callable[[list[dict[str, Any]]], dict[str, Any]]]
    postprocess: Callable[[np.ndarray, Sequence[str], Any], list[dict[str, Any]]]
    metrics: Callable[[np.ndarray, np.ndarray, Sequence[str], Any], dict[str, Any]]
    loss: Callable[[Any, Mapping[str, torch.Tensor], Any], torch.Tensor] | None = None
    fit: Callable[[Any, Sequence[Any], Sequence[str]], Any] | None = None
    model_config: Callable[[Any], dict[str, Any]] | None = None


def label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` and ``label2id`` as transformers configs store them."""
    return dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}


def label_separator(params: Any) -> str | None:
    """Separator of multi-label cells when the task's params ask for multi-label rows, else None."""
    return params.label_separator if getattr(params, "multi_label", False) else None


def load_with_labels(
    task: TaskSpec, model_dir: Any, labels: Sequence[str], params: Any, **kwargs: Any
) -> Any:
    """``task.model_class`` from ``model_dir`` with a head sized for ``labels``, in fp32.

    A freshly initialised head is what fine-tuning starts from, so transformers' "newly initialized"
    warning is silenced here. ``kwargs`` go to ``from_pretrained`` (e.g. ``trust_remote_code``), after
    the task's ``model_config(params)``.
    """
    kwargs = {**(task.model_config(params) if task.model_config is not None else {}), **kwargs}
    from transformers import logging as hf_logging

    id2label, label2id = label_maps(labels)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return task.model_class.from_pretrained(
            model_dir,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            dtype=torch.float32,
            **kwargs,
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def tokenize_dataset(task: TaskSpec, params: Any, tokenizer: Any, data: Any, labels: Sequence[str]) -> Any:
    """Apply ``task.preprocess`` batched over a ``datasets.Dataset``, keeping only model features."""
    _, label2id = label_maps(labels)
    return data.map(
        lambda batch: task.preprocess(batch, tokenizer, params, label2id),
        batched=True,
        remove_columns=data.column_names,
        keep_in_memory=True,
        desc="tokenize",
    )
