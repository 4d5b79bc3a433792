"""Build what the loop trains: tokenizer, model with its task head, adapted by the methods, and features."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from accelerate.utils import set_seed
from transformers import AutoTokenizer

from tunelab.data import LabeledData, load_labeled_data
from tunelab.methods.spec import Adapted, model_loss
from tunelab.tasks.spec import TaskSpec, load_with_labels, tokenize_dataset
from tunelab.training.plan import Plan

logger = logging.getLogger(__name__)


@dataclass
class TrainInputs:
    """Everything ``train`` needs besides the plan; features are tokenised, unpadded."""

    adapted: Adapted
    tokenizer: Any
    collator: Any
    labels: list[str]
    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset | None


def load_tokenizer(plan: Plan) -> Any:
    """The model directory's tokenizer (fast, Rust-backed), offline."""
    return AutoTokenizer.from_pretrained(plan.model_dir, trust_remote_code=plan.cfg.model.trust_remote_code)


def load_model(plan: Plan, labels: list[str]) -> torch.nn.Module:
    """Pretrained backbone + a fresh task head sized for ``labels``, in fp32 (autocast handles precision)."""
    model = load_with_labels(
        plan.task, plan.model_dir, labels, trust_remote_code=plan.cfg.model.trust_remote_code
    )
    if plan.cfg.train.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


def task_adapted(task: TaskSpec, model: torch.nn.Module) -> Adapted:
    """``model`` trained with ``task``'s loss (the model's own loss unless the task defines one)."""
    return Adapted(model=model, loss=task.loss or model_loss)


def apply_methods(plan: Plan, model: torch.nn.Module) -> Adapted:
    """Apply the configured methods in order; each sees the previous one's model."""
    adapted = task_adapted(plan.task, model)
    for spec, params in plan.methods:
        nxt = spec.apply(adapted.model, params, plan.task.head_modules)
        adapted = Adapted(
            model=nxt.model,
            companions={**adapted.companions, **nxt.companions},
            loss=adapted.loss,
            lr_scale={**adapted.lr_scale, **nxt.lr_scale},
            lr_start={**adapted.lr_start, **nxt.lr_start},
        )
    return adapted


def prepare_inputs(plan: Plan, data: LabeledData | None = None) -> TrainInputs:
    """Load and check data, then tokenizer, model and methods; tokenise every split."""
    cfg = plan.cfg
    data = data or load_labeled_data(cfg.data, plan.task_params.labels, cfg.train.seed)
    logger.info(
        "data: %d train / %d dev%s rows, labels %s",
        len(data.train),
        len(data.dev),
        f" / {len(data.test)} test" if data.test is not None else "",
        data.labels,
    )
    tokenizer = load_tokenizer(plan)
    set_seed(cfg.train.seed)  # the fresh head's init is part of the run's reproducibility
    model = load_model(plan, data.labels)
    adapted = apply_methods(plan, model)

    def features(split: datasets.Dataset) -> datasets.Dataset:
        return tokenize_dataset(plan.task, plan.task_params, tokenizer, split, data.labels)

    return TrainInputs(
        adapted=adapted,
        tokenizer=tokenizer,
        collator=plan.task.collator(tokenizer),
        labels=data.labels,
        train=features(data.train),
        dev=features(data.dev),
        test=features(data.test) if data.test is not None else None,
    )
