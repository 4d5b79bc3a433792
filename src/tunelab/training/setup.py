"""Build what the loop trains: tokenizer, model with its task head, adapted by the methods, and features."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import datasets
import torch
from accelerate.utils import set_seed

from tunelab.config import AugmentConfig
from tunelab.data import TaskData, columns_of, load_inputs
from tunelab.data.augment import AugmentingCollator, Tokenize, load_synonyms
from tunelab.methods.losses import model_logits, smoothed_cross_entropy
from tunelab.methods.spec import Adapted, ColumnDict, LossFn, PreviousTask, RunData, model_loss
from tunelab.models import manifest
from tunelab.models.continual import continued_labels, load_grown, previous_record
from tunelab.models.load import load_input_processor
from tunelab.models.run_info import DataFile
from tunelab.tasks.spec import TaskSpec, load_with_labels, model_config_overrides, tokenize_dataset
from tunelab.training.continual import load_previous
from tunelab.training.plan import Plan

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


@dataclass
class TrainInputs:
    """Everything ``train`` needs besides the plan; features are tokenised, unpadded.

    ``examples`` maps split name (``dev``, ``test``) to its raw examples, for task metrics that
    need them (``evaluate(..., examples=...)``).
    """

    adapted: Adapted
    tokenizer: Any
    collator: Any
    labels: list[str]
    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset | None
    examples: dict[str, datasets.Dataset] = field(default_factory=dict)
    task_params: Any = None  # the plan's, fitted to the train split (TaskSpec.fit): what the run saves
    train_collator: Any = (
        None  # training batches when they differ from ``collator`` (TaskSpec.train_collator)
    )
    # sha256 of every file and teacher the run read, by config key: its run record's, and what a
    # resume compares (models.manifest.data_files)
    data_files: dict[str, DataFile] = field(default_factory=dict)


def load_model(plan: Plan, labels: list[str], params: Any) -> torch.nn.Module:
    """Pretrained backbone + a fresh task head sized for ``labels``, in fp32 (autocast handles precision).

    A continual run (``model.previous_run``) starts from the previous run's model with its head grown.
    """
    model: PreTrainedModel
    if plan.cfg.model.previous_run is not None:
        overrides = model_config_overrides(plan.task, params)
        model = cast(
            "PreTrainedModel", load_grown(plan.task.model_class, plan.model_dir, labels, **overrides)
        )
    else:
        model = load_with_labels(
            plan.task, plan.model_dir, labels, params, trust_remote_code=plan.cfg.model.trust_remote_code
        )
    if plan.cfg.train.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


def task_adapted(
    task: TaskSpec,
    params: Any,
    model: torch.nn.Module,
    label_smoothing: float = 0.0,
    previous: PreviousTask | None = None,
) -> Adapted:
    """``model`` trained with ``task``'s loss under ``params`` (else the model's own loss).

    ``label_smoothing`` goes to the task's own loss, or swaps the model's own cross-entropy for the
    smoothed one, so every method's hard loss is smoothed alike.
    """
    loss: LossFn = model_loss
    if task.loss is not None:
        loss = partial(task.loss, params=params, label_smoothing=label_smoothing)
    elif label_smoothing:

        def loss(outputs: Any, batch: Any) -> torch.Tensor:
            return smoothed_cross_entropy(model_logits(outputs), batch.get("labels"), label_smoothing)

    return Adapted(model=model, loss=loss, previous=previous)


def fit_params(task: TaskSpec, params: Any, data: TaskData) -> Any:
    """``params`` with their data-dependent values (e.g. balanced class weights) computed on train."""
    return task.fit(params, data.train, data.labels) if task.fit is not None else params


def apply_methods(
    plan: Plan, model: torch.nn.Module, params: Any, previous: PreviousTask | None = None
) -> Adapted:
    """Apply the configured methods in order; each sees the previous one's model."""
    adapted = task_adapted(plan.task, params, model, plan.cfg.train.label_smoothing, previous)
    for spec, method_params in plan.methods:
        nxt = spec.apply(adapted.model, method_params, plan.task.head_modules)
        adapted = Adapted(
            model=nxt.model,
            companions={**adapted.companions, **nxt.companions},
            loss=adapted.loss,
            lr_scale={**adapted.lr_scale, **nxt.lr_scale},
            lr_start={**adapted.lr_start, **nxt.lr_start},
            previous=previous,
        )
    return adapted


def prepare_inputs(plan: Plan, data: TaskData | None = None) -> TrainInputs:
    """Load and check data (the task's reader), then tokenizer, model and methods; tokenise every split."""
    cfg = plan.cfg
    data = data or plan.task.load_data(cfg.data, plan.task_params, cfg.train.seed)
    # Fitted on this run's own labels: a previous run's label has no train row here, which would
    # read as skewed data (class_weights auto) though this run's labels are not.
    params = fit_params(plan.task, plan.task_params, data)
    if cfg.model.previous_run is not None:  # the grown head: the previous run's labels come first
        previous_labels = previous_record(cfg.model.previous_run).labels
        data = replace(data, labels=continued_labels(previous_labels, data.labels, explicit=False))
        params = fit_params(plan.task, params, data)  # the fitted values, extended to the grown labels
    logger.info(
        "data: %d train / %d dev%s rows, %d labels %s",
        len(data.train),
        len(data.dev),
        f" / {len(data.test)} test" if data.test is not None else "",
        len(data.labels),
        data.labels[:20] + ["..."] * (len(data.labels) > 20),  # a retrieval run's labels are its corpus
    )
    pretrained = plan.pretrained_start  # what the config names, before a task builds init/ from it
    if plan.task.init_model is not None:  # e.g. a from-scratch or warm-started model, built once in init/
        start = plan.task.init_model(
            plan.task_params, data, plan.model_dir, cfg.train.output_dir / "init", cfg.train.seed
        )
        plan = replace(plan, model_dir=start)
    tokenizer = load_input_processor(plan.model_dir, trust_remote_code=cfg.model.trust_remote_code)
    set_seed(cfg.train.seed)  # the fresh head's init is part of the run's reproducibility
    model = load_model(plan, data.labels, params)
    if plan.task.check_model is not None:
        plan.task.check_model(model.config, params)
    collator = plan.task.collator(tokenizer, params)
    previous = None
    if cfg.model.previous_run is not None:
        previous = load_previous(plan.task, cfg.model.previous_run, tokenizer, data.labels, collator)
    adapted = apply_methods(plan, model, params, previous)

    def features(split: datasets.Dataset) -> datasets.Dataset:
        return tokenize_dataset(plan.task, params, tokenizer, split, data.labels)

    def tokenize(columns: ColumnDict) -> ColumnDict:
        return plan.task.preprocess(columns, tokenizer, params, {})

    train = features(data.train)
    read_inputs = partial(load_inputs, columns=columns_of(cfg.data))
    data_files = manifest.data_files(cfg.data, [p for _, p in plan.methods], pretrained)
    digests = {file.path: file.sha256 for file in data_files.values()}
    run_data = RunData(train, collator, cfg.train.seed, read_inputs, tokenize, digests)
    for spec, method_params in plan.methods:
        if spec.prepare is not None:
            spec.prepare(adapted, method_params, run_data)
    if cfg.data.augment is not None:
        train, collator = _augmenting(plan, cfg.data.augment, tokenize, data.train, train, collator)
    train_collator = plan.task.train_collator(tokenizer, params) if plan.task.train_collator else None
    return TrainInputs(
        adapted=adapted,
        tokenizer=tokenizer,
        collator=collator,
        labels=data.labels,
        train=train,
        dev=features(data.dev),
        test=features(data.test) if data.test is not None else None,
        examples={"dev": data.dev, **({"test": data.test} if data.test is not None else {})},
        task_params=params,
        train_collator=train_collator,
        data_files=data_files,
    )


def _augmenting(
    plan: Plan,
    cfg: AugmentConfig,
    tokenize: Tokenize,
    raw: datasets.Dataset,
    train: datasets.Dataset,
    collator: Any,
) -> tuple[datasets.Dataset, AugmentingCollator]:
    """Training features that keep their raw text and row index, and the collator that augments them."""
    train = train.add_column("row", list(range(len(train))))
    for column in ("text", "text_pair"):
        if column in raw.column_names:
            train = train.add_column(column, raw[column])
    synonyms = load_synonyms(cfg.synonyms_file) if cfg.synonyms_file is not None else {}
    return train, AugmentingCollator(collator, tokenize, cfg, plan.cfg.train.seed, synonyms)
