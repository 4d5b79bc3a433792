"""Resolve a RunConfig against the registries before any weight is loaded.

Task and method params are validated here (not in config.py, which sits below the registries), with
errors keyed by their full path, e.g. ``methods[0].params.r``. Tasks with one label per row also have
their train labels counted here, because the default selection metric depends on their balance and
must be fixed before ``run_config.yaml`` is written and a resumed run compares its config.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tunelab.config import RunConfig
from tunelab.data.checks import RARE_ROWS, LabelBalance, label_balance, report_label_balance
from tunelab.errors import AssetError, CheckpointError, ConfigError, format_validation_error
from tunelab.methods import METHODS
from tunelab.methods.spec import MethodSpec, StepFn, Target, default_step
from tunelab.models.continual import continued_labels, previous_model_dir, previous_record
from tunelab.models.load import load_config, refuse_unknown_settings, resolve_model
from tunelab.tasks import TASKS
from tunelab.tasks.spec import TaskSpec, model_config_overrides

LOWER_IS_BETTER = ("loss", "perplexity")
BALANCED_METRIC = "macro_f1"  # selects best/ on skewed labels: every label's F1 counts alike
SCRATCH = "scratch"  # model.name_or_path of a run that builds its own tokenizer and model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A validated run: config, specs with their parsed params, and the local model directory."""

    cfg: RunConfig
    task: TaskSpec
    task_params: Any
    methods: tuple[tuple[MethodSpec, Any], ...]
    model_dir: Path
    label_balance: LabelBalance | None = None  # train rows per label (one-label-per-row tasks)
    selection_reason: str | None = None  # why resolve chose the selection metric; None: the config set it

    @property
    def selection_metric(self) -> str:
        """The dev metric that selects best/ (``train.metric_for_best_model``, filled in by ``resolve``)."""
        metric = self.cfg.train.metric_for_best_model
        assert metric is not None, "resolve() sets train.metric_for_best_model"
        return metric

    @property
    def step(self) -> StepFn:
        """The micro-step: the one method's that replaces it (``resolve`` allows one), else the default."""
        custom = [spec.step for spec, _ in self.methods if spec.step is not default_step]
        return custom[0] if custom else default_step

    @property
    def pretrained_start(self) -> Path | None:
        """``model_dir`` when it is a pretrained model the config names (``model.name_or_path``).

        None for a model the run builds itself (``from_scratch``: its ``init/``) or a continued run
        (``model.previous_run``, recorded by that run's own record).
        """
        named = self.cfg.model.previous_run is None and self.cfg.model.name_or_path != SCRATCH
        return self.model_dir if named else None

    @property
    def higher_is_better(self) -> bool:
        """Loss-like metrics and perplexity improve downwards, every other metric upwards."""
        return not self.selection_metric.endswith(LOWER_IS_BETTER)


def _validate(model: type[BaseModel], raw: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.append(format_validation_error(exc, model, prefix=prefix))
        return None


def _names(kind: str) -> str:
    """The task names that have capability ``kind`` (a ``TaskSpec`` flag), for error messages."""
    return ", ".join(name for name in TASKS.names() if getattr(TASKS.get(name), kind))


def _task_problems(cfg: RunConfig, task: TaskSpec) -> list[str]:
    """Data options the task cannot take (its ``TaskSpec`` capabilities say which it can)."""
    problems: list[str] = []
    if cfg.data.k_shot is not None and not task.few_shot:
        problems.append(
            f"data.k_shot: task {task.name!r} does not read one label per row; "
            f"k_shot supports: {_names('few_shot')}"
        )
    elif cfg.data.k_shot == 0 and not task.zero_shot:
        problems.append(
            f"data.k_shot: 0 means no training, and task {task.name!r} would predict with an untrained head; "
            f"zero-shot tasks: {_names('zero_shot')}"
        )
    if cfg.data.augment is not None and not task.augmentable:
        problems.append(
            f"data.augment: task {task.name!r} labels tokens or spans, which word edits would misalign; "
            f"augmentation supports: {_names('augmentable')}"
        )
    return problems


def _method_conflicts(cfg: RunConfig, methods: list[tuple[MethodSpec, Any]]) -> list[str]:
    """What each method cannot take from the rest of the config (``MethodSpec.conflicts``)."""
    return [
        f"methods[{i}].{problem}"
        for i, (spec, params) in enumerate(methods)
        if spec.conflicts is not None and params is not None
        for problem in spec.conflicts(params, cfg)
    ]


def _from_scratch(task: TaskSpec | None, params: Any) -> bool:
    """Whether the (validated) task params ask for a model built by tunelab (``TaskSpec.from_scratch``)."""
    if task is None or params is None or task.from_scratch is None:
        return False
    return task.from_scratch(params)


def resolve(cfg: RunConfig, count_labels: bool = True) -> Plan:
    """Look up specs, validate their params and combinations; report every problem at once.

    ``count_labels=False`` reads no data row (``tunelab validate`` without ``--data``): the label
    balance is then unknown and an unset selection metric falls back to the task's main metric.
    """
    problems: list[str] = []
    task = task_params = None
    try:
        task = TASKS.get(cfg.task.name)
        task_params = _validate(task.params, cfg.task.params, "task.params", problems)
    except KeyError as exc:
        problems.append(f"task.name: {exc.args[0]}")

    methods: list[tuple[MethodSpec, Any]] = []
    for i, method_cfg in enumerate(cfg.methods):
        try:
            spec = METHODS.get(method_cfg.name)
        except KeyError as exc:
            problems.append(f"methods[{i}].name: {exc.args[0]}")
            continue
        methods.append((spec, _validate(spec.params, method_cfg.params, f"methods[{i}].params", problems)))
    if not cfg.methods:
        problems.append("methods: list at least one method (e.g. [{name: full}])")
    custom_steps = [spec.name for spec, _ in methods if spec.step is not default_step]
    if len(custom_steps) > 1:
        problems.append(
            f"methods: {' and '.join(custom_steps)} each replace the training step (a step owns the "
            "micro-batch's forward and backward, and two cannot be chained); keep one"
        )
    if task is not None:
        problems += _task_problems(cfg, task)
    problems += _method_conflicts(cfg, methods)

    problems += combination_problems(methods, task, task_params)
    if task is not None and cfg.train.metric_for_best_model is not None:
        allowed = ("loss", *task.metric_names)
        if cfg.train.metric_for_best_model not in allowed:
            problems.append(
                f"train.metric_for_best_model: {cfg.train.metric_for_best_model!r} is not a metric of task "
                f"{task.name!r}; choose one of: {', '.join(allowed)}"
            )
    model_dir: Path | None = None  # stays None when the start could not be resolved (a problem says why)
    scratch = _from_scratch(task, task_params)
    if cfg.model.previous_run is not None:
        model_dir, continual_problems = _previous_run(cfg, task, task_params)
        problems += continual_problems
    elif scratch or cfg.model.name_or_path == SCRATCH:
        model_dir = cfg.train.output_dir / "init"
        if not (scratch and cfg.model.name_or_path == SCRATCH):
            problems.append(
                f"model.name_or_path: {SCRATCH!r} goes with task.params.from_scratch (a tokenizer and model "
                "built by tunelab); set both, or give a model without from_scratch"
            )
    else:
        assert cfg.model.name_or_path is not None, "ModelConfig: name_or_path or previous_run"
        try:
            model_dir = resolve_model(cfg.model.name_or_path)
        except AssetError as exc:
            problems.append(f"model.name_or_path: {exc}")
    if task is not None and task_params is not None and model_dir is not None:
        problems += _model_setting_problems(cfg, task, task_params, model_dir)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(problems))
    assert task is not None
    assert model_dir is not None
    balance = train_label_balance(cfg, task, task_params) if count_labels else None
    reason = None
    if cfg.train.metric_for_best_model is None:
        metric, reason = default_selection_metric(task, balance)
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"metric_for_best_model": metric})})
    return Plan(
        cfg=cfg,
        task=task,
        task_params=task_params,
        methods=tuple(methods),
        model_dir=model_dir,
        label_balance=balance,
        selection_reason=reason,
    )


def _model_setting_problems(cfg: RunConfig, task: TaskSpec, task_params: Any, model_dir: Path) -> list[str]:
    """The task's config overrides that the local model's architecture has no setting for.

    Read from the model directory's config.json alone (no weights), so ``tunelab validate`` names the
    key that training would refuse (``models.load.load_pretrained``); a model built by the run itself
    (``from_scratch``) has no config.json yet and is not checked.
    """
    if not (model_dir / "config.json").is_file():
        return []
    try:
        hf_config = load_config(model_dir, cfg.model.trust_remote_code)
        refuse_unknown_settings(
            task.model_class, hf_config, model_config_overrides(task, task_params), model_dir
        )
    except ConfigError as exc:  # a damaged model dir (CheckpointError) stays its own one-line error
        return [str(exc)]
    return []


def can_continue(task: TaskSpec) -> bool:
    """Whether a run of ``task`` can continue a previous run (``model.previous_run``).

    Continuing grows the previous model's label head, so the task needs one label per row
    (``few_shot``), a head of its own (``head_modules``) and a transformers architecture (transformers
    loads the grown head).
    """
    return task.few_shot and bool(task.head_modules) and not task.own_architecture


def why_no_continual(task: TaskSpec) -> str | None:
    """Why a run of ``task`` cannot continue a previous run, or None (see :func:`can_continue`)."""
    if can_continue(task):
        return None
    able = ", ".join(name for name in TASKS.names() if can_continue(TASKS.get(name)))
    return (
        f"continuing a previous run grows its label head, and task {task.name!r} has no transformers head "
        f"with one label per row; tasks that continue: {able}"
    )


def _previous_run(cfg: RunConfig, task: TaskSpec | None, task_params: Any) -> tuple[Path | None, list[str]]:
    """``model.previous_run``'s best/ (the start) and what keeps this run from continuing it.

    The start is None when the previous run's record is unreadable (the problem says why).
    """
    assert cfg.model.previous_run is not None
    try:
        record = previous_record(cfg.model.previous_run)
    except CheckpointError as exc:
        return None, [f"model.previous_run: {exc}"]
    run = cfg.model.previous_run
    problems = []
    if run.resolve() == cfg.train.output_dir.resolve():
        problems.append("train.output_dir: is model.previous_run; a continual run writes a new run dir")
    if task is not None and record.task != task.name:
        problems.append(
            f"model.previous_run: {run} trained task {record.task!r}, this run {task.name!r}; continual "
            "runs grow one task's label head, so both must be the same task"
        )
    elif task is not None and (why := why_no_continual(task)):
        problems.append(f"model.previous_run: {why}")
    # A multi-hot row has no one column of the grown head: ewc's loss and the forgetting report read one.
    multi_label = {
        "task.params.multi_label": getattr(task_params, "multi_label", False),
        f"model.previous_run: {run} trained with task.params.multi_label": record.task_params.get(
            "multi_label"
        ),
    }
    problems += [
        f"{where}: continual runs grow a head with one label per row; both runs must be single-label"
        for where, on in multi_label.items()
        if on
    ]
    given = getattr(task_params, "labels", None)
    if given is not None:
        try:
            continued_labels(record.labels, given, explicit=True)
        except ConfigError as exc:
            problems.append(str(exc))
    return previous_model_dir(run), problems


def train_label_balance(cfg: RunConfig, task: TaskSpec, task_params: Any) -> LabelBalance | None:
    """Train rows per label, for tasks with one label per row (``TaskSpec.few_shot``).

    The train split is read through the task's own reader, exactly as the run will see it (dev split
    off, ``max_train_samples`` / ``k_shot`` applied); the run reads it once more when it tokenises. None
    for other tasks, for zero-shot runs (no train row), and when the train file is not there yet (a
    config validated before its data is prepared; ``train`` and ``validate --data`` report it missing).
    """
    if not task.few_shot or cfg.data.k_shot == 0 or not cfg.data.train_file.is_file():
        return None
    data = task.load_data(cfg.data, task_params, cfg.train.seed)
    return label_balance(data.train["label"], data.labels)


def report_choices(plan: Plan) -> None:
    """Log what ``resolve`` found in the train labels and chose from them, once logging is set up.

    ``resolve`` runs before the CLI configures logging (which needs the process rank), so it records
    and this reports.
    """
    if plan.label_balance is not None:
        report_label_balance(plan.label_balance)
    if plan.selection_reason is not None:
        logger.info(
            "train.metric_for_best_model unset: selecting best/ on %s (%s)",
            plan.selection_metric,
            plan.selection_reason,
        )


def default_selection_metric(task: TaskSpec, balance: LabelBalance | None) -> tuple[str, str]:
    """The dev metric that selects best/ when ``train.metric_for_best_model`` is unset, and why.

    The task's main metric, except on skewed train labels (``LabelBalance.skewed``) when the task
    reports macro-F1: accuracy there keeps checkpoints that never predict the small labels (measured in
    bench/RESULTS.md, "Skewed and many-label data"), macro-F1 weighs every label alike.
    """
    main = task.metric_names[0]
    if balance is not None and balance.skewed and BALANCED_METRIC in task.metric_names:
        reason = "imbalanced" if balance.imbalanced else f"with labels under {RARE_ROWS} rows"
        return BALANCED_METRIC, f"train labels are {reason}; {main} would favour the large labels"
    return main, f"the main metric of task {task.name!r}"


def combination_problems(
    methods: list[tuple[MethodSpec, Any]], task: TaskSpec | None, task_params: Any
) -> list[str]:
    """Methods of one group together, and what each method refuses for this task (with its reason)."""
    problems = []
    groups: dict[str, list[str]] = {}
    for spec, _ in methods:
        if spec.group is not None:
            groups.setdefault(spec.group, []).append(spec.name)
    for group, names in groups.items():
        if len(names) > 1:
            problems.append(f"methods: {' and '.join(names)} each decide the {group} parameters; keep one")
    if task is None:
        return problems
    target = method_target(task, [spec for spec, _ in methods], task_params)
    for i, (spec, params) in enumerate(methods):
        reason = spec.refuses(params, target) if spec.refuses and params is not None else None
        if reason:
            problems.append(f"methods[{i}].name: {spec.name} cannot train task {task.name!r}: {reason}")
    return problems


def method_target(task: TaskSpec, methods: Sequence[MethodSpec], task_params: Any = None) -> Target:
    """What the methods are applied to: the task's capabilities and every configured method.

    ``task_params`` (validated; None when they are invalid or unknown) decide the params-dependent
    capabilities, e.g. whether the task's batches carry a block mask.
    """
    block_mask = task.block_mask(task_params) if task.block_mask and task_params is not None else None
    return Target(
        task=task.name,
        model_class=task.model_class.__name__,
        restructuring=tuple(spec.name for spec in methods if spec.rebuild is not None),
        why_no_logits=task.why_no_logits,
        own_architecture=task.own_architecture,
        block_mask=block_mask,
        why_no_continual=why_no_continual(task),
    )
