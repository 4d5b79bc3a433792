"""Workflows: train -> final report, and the eval plumbing behind the CLI (predict / explain: ``.predict``).

``cli`` parses arguments and maps errors to exit codes; what a command *does* lives here, as
plain functions a script or a test can call without a terminal. This is the only module that wires
training to evaluation and saving (the loop gets them as callables, so ``training`` never imports
``evaluation``).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, cast, get_args

from tunelab.config import dump_config, load_config
from tunelab.data import Columns, columns_of
from tunelab.errors import ConfigError
from tunelab.evaluation import evaluate
from tunelab.evaluation.continual import previous_task_metrics
from tunelab.evaluation.ensemble import ensemble_of
from tunelab.evaluation.report import metrics_table, write_report
from tunelab.inference.artifact import Artifact, load_artifact
from tunelab.io import atomic_write
from tunelab.models import manifest
from tunelab.models.artifact import save_model
from tunelab.models.run_info import RunInfo
from tunelab.tasks.spec import tokenize_dataset
from tunelab.training import (
    StopFlag,
    TrainInputs,
    TrainResult,
    build_accelerator,
    prepare_inputs,
    report_accelerator,
    resolve,
)
from tunelab.training import train as run_training
from tunelab.training.auto_batch import auto_batch_size, resumed_micro_batch
from tunelab.training.checkpoint import check_resumable, latest_checkpoint, read_state
from tunelab.training.launch import elastic_restart
from tunelab.training.loop import OnEval
from tunelab.training.measure import Measured, measure_steps
from tunelab.training.memory import Estimate, Shard, estimate_plan
from tunelab.training.plan import Plan, report_choices
from tunelab.training.run_dir import start_dir
from tunelab.training.tracking import read_history

logger = logging.getLogger(__name__)
SHARDS: tuple[str, ...] = get_args(Shard)


def run_info(plan: Plan, inputs: TrainInputs, processes: int = 1) -> RunInfo:
    """The run record every model this run saves carries (step and dev metrics added per save).

    With the manifest of what the run read (``models.manifest``): data files, features, tokenizer,
    and the process count, the one input of the numbers that is not in the config.
    """
    cfg = plan.cfg
    splits = {"train": inputs.train, "dev": inputs.dev, "test": inputs.test}
    return RunInfo(
        task=plan.task.name,
        task_params=inputs.task_params.model_dump(mode="json"),
        labels=inputs.labels,
        columns=columns_of(cfg.data),
        seed=cfg.train.seed,
        processes=processes,
        config=cfg,
        data_files=inputs.data_files,
        features_sha256={name: manifest.features_sha256(ds) for name, ds in splits.items() if ds is not None},
        tokenizer_sha256=manifest.tokenizer_sha256(inputs.tokenizer),
        chat_template_sha256=manifest.chat_template_sha256(inputs.tokenizer),
    )


def run_labels(plan: Plan) -> list[str]:
    """The labels the run's head is sized for: counted by ``resolve``, else read by the task's reader."""
    if plan.label_balance is not None:
        return list(plan.label_balance.counts)
    return list(plan.task.load_data(plan.cfg.data, plan.task_params, plan.cfg.train.seed).labels)


def estimate_memory(
    config: Path,
    overrides: Sequence[str] = (),
    world_size: int = 1,
    shard: str = "none",
    measure: bool = False,
    on_start: Callable[[], None] | None = None,
) -> tuple[Estimate, Measured | None]:
    """Per-device memory of training CONFIG; with ``measure``, also 3 real steps in a fresh process.

    The measured steps run in a spawned process (``on_start`` runs first there, e.g. the CLI's
    logging setup) so that nothing this one loaded counts; the estimate is then computed for the
    largest micro-batch they ran, so both columns describe the same batch.
    """
    if shard not in SHARDS:
        raise ConfigError(f"--shard: {shard!r} is not one of {', '.join(SHARDS)}")
    if measure and (world_size > 1 or shard != "none"):
        raise ConfigError("--measure runs one process: drop --world-size and --shard, or --measure")
    plan = resolve(load_config(config, list(overrides)))
    measured = None
    if measure:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn, initializer=on_start) as pool:
            measured = pool.submit(measure_steps, plan.cfg).result()
    micro_batch = (measured.batch, measured.seq_len) if measured is not None else None
    shards = cast(Shard, shard)
    return estimate_plan(plan, run_labels(plan), world_size, shards, micro_batch), measured


def check_data(plan: Plan) -> str:
    """Read and check every row of the config's train/dev/test files, as ``train`` would; load no model.

    Goes through the task's own ``load_data``, the one reader ``train`` uses, so a file that passes here
    passes there, and a bad one raises the same DataError (every bad row as ``file:line``, in order).
    Returns a one-line summary: rows per split as the run would see them, and the labels.
    """
    cfg = plan.cfg
    report_choices(plan)
    data = plan.task.load_data(cfg.data, plan.task_params, cfg.train.seed)
    splits = {"train": data.train, "dev": data.dev, "test": data.test}
    rows = ", ".join(f"{name} {len(split)}" for name, split in splits.items() if split is not None)
    shown = ", ".join(data.labels[:20]) + (", ..." if len(data.labels) > 20 else "")
    return f"rows: {rows}" + (f"; {len(data.labels)} labels: {shown}" if data.labels else "")


def train_run(
    config: Path,
    overrides: Sequence[str] = (),
    resume: bool = False,
    resume_from: Path | None = None,
    overwrite: bool = False,
    on_start: Any = None,
    on_eval: OnEval | None = None,
) -> TrainResult:
    """Validate CONFIG, train, keep the best dev model in ``best/``, then score it (dev + test).

    Every config error, a config the resumed checkpoint refuses included, is raised before any data
    or weights load and before ``run_config.yaml`` is written. ``on_start(process_index)`` runs once
    the process group is known (the CLI sets up rank-aware logging there). A zero-shot run
    (``data.k_shot: 0``) saves the model as loaded after scoring it on dev. An interrupted run returns
    with ``stopped == "interrupted"`` after its checkpoint is saved; a SIGINT/SIGTERM that arrives after
    the last step is ignored, so the final report is written and the run ends completed.
    ``on_eval(metrics, step)`` (a search's pruner) may stop the run after any evaluation; a run it
    stops (``pruned``) keeps its checkpoint and best/ but skips the test-set report.
    ``train.auto_batch_size`` picks the micro-batch once model and data are loaded, before
    ``run_config.yaml`` records it; a resumed run keeps its checkpoint's. In a group that
    torchelastic restarted (``--max-restarts``) every process resumes from the newest checkpoint.
    """
    plan = resolve(load_config(config, list(overrides)))
    if elastic_restart():  # torchelastic restarted the group after a failure: continue, never start over
        resume, overwrite = True, False
        resume_from = latest_checkpoint(plan.cfg.train.output_dir) or resume_from
    accelerator = build_accelerator(plan.cfg.train)
    if on_start is not None:
        on_start(accelerator.process_index)
    report_accelerator(accelerator, plan.cfg.train)
    report_choices(plan)
    out = plan.cfg.train.output_dir
    resume_from = start_dir(out, resume, resume_from, overwrite, accelerator.is_main_process)
    if resume_from is not None:
        plan = resumed_micro_batch(plan, read_state(resume_from).config)
        check_resumable(resume_from, plan.cfg.model_dump(mode="json"), accelerator.num_processes)
    accelerator.wait_for_everyone()
    inputs = prepare_inputs(plan)
    if resume_from is None:
        plan = auto_batch_size(plan, inputs, accelerator)
    cfg = plan.cfg
    if accelerator.is_main_process:
        atomic_write(out / "run_config.yaml", dump_config(cfg))
    # only rank 0 saves: hash once
    info = run_info(plan, inputs, accelerator.num_processes) if accelerator.is_main_process else None

    def on_best(model: Any, metrics: Mapping[str, Any], step: int) -> None:
        if info is not None:
            record = info.model_copy(update={"step": step, "dev_metrics": dict(metrics)})
            save_model(model, inputs.tokenizer, out / "best", record)

    evaluate_dev = partial(
        evaluate,
        task=plan.task,
        features=inputs.dev,
        collator=inputs.collator,
        labels=inputs.labels,
        batch_size=cfg.train.eval_batch_size,
        accelerator=accelerator,
        params=inputs.task_params,
        examples=inputs.examples["dev"],
        tokenizer=inputs.tokenizer,
    )
    stop = StopFlag()
    with stop.installed():  # through the final report: a finished run is not killed by a late signal
        if cfg.data.k_shot == 0:  # zero-shot: the model scores labels as loaded; it is saved, not trained
            on_best(inputs.adapted.model, evaluate_dev(inputs.adapted.model), 0)
            result = TrainResult(step=0, stopped="completed", best_metric=None, best_step=0, checkpoint=None)
        else:
            result = run_training(
                plan, inputs, accelerator, evaluate_dev, on_best, resume_from, stop, on_eval
            )
            if result.stopped == "pruned":
                logger.info("pruned at step %d (best %s)", result.step, result.best_metric)
                return result
            if result.stopped == "interrupted":
                logger.warning(
                    "interrupted at step %d; checkpoint %s; continue with: tunelab train %s --resume",
                    result.step,
                    result.checkpoint,
                    config,
                )
                return result
            logger.info(
                "training %s at step %d; best %s=%s at step %s",
                result.stopped,
                result.step,
                cfg.train.metric_for_best_model,
                result.best_metric,
                result.best_step,
            )
        if accelerator.is_main_process:
            final_report(plan, out, inputs, cfg.train.eval_batch_size)
    if stop.signum is not None:
        logger.warning("signal %d arrived after the last step; the finished run ignored it", stop.signum)
    return result


def final_report(plan: Plan, out: Path, inputs: TrainInputs, batch_size: int) -> dict[str, Any]:
    """Write metrics.json + PNGs into best/: dev metrics as recorded when it was saved, test scored now.

    Methods with a ``report`` (e.g. MoE's router health) add their sections, computed on dev. A
    continual run adds the previous task's dev/test metrics (``evaluation.continual``).
    """
    best = load_artifact(out / "best")
    metrics = {"dev": best.info.dev_metrics or {}}  # the loop scored these exact weights on dev already
    if inputs.test is not None:
        metrics["test"] = evaluate_artifact(
            best, inputs.test, inputs.examples["test"], inputs.collator, batch_size
        )
    previous = inputs.adapted.previous
    if previous is not None:  # a continual run: how much of the previous task it kept
        metrics.update(previous_task_metrics(best.model, best.task, previous, batch_size))
    report: dict[str, Any] = dict(metrics)
    for spec, _ in plan.methods:
        if spec.report is not None:
            report.update(
                spec.report(best.model, _batches(inputs.dev, inputs.collator, batch_size), best.path)
            )
    write_report(best.path, report, best.labels, read_history(out))
    _print_table(metrics)
    logger.info("model, metrics.json and plots in %s", best.path)
    return report


def _batches(features: Any, collator: Any, batch_size: int) -> Iterable[Any]:
    from torch.utils.data import DataLoader

    return DataLoader(features, batch_size=batch_size, collate_fn=collator)


def _print_table(metrics: Mapping[str, Any]) -> None:
    from rich.console import Console

    Console(stderr=True).print(metrics_table(metrics))


def evaluate_artifact(
    art: Artifact, features: Any, examples: Any, collator: Any, batch_size: int
) -> dict[str, Any]:
    """Metrics of a loaded model on tokenised ``features`` (``examples``: their raw rows)."""
    return evaluate(
        art.model,
        art.task,
        features,
        collator,
        art.labels,
        batch_size,
        params=art.task_params,
        examples=examples,
        tokenizer=art.tokenizer,
    )


def load_models(model_dirs: Sequence[Path], combine: str) -> Artifact:
    """One saved model, or the ensemble of several (same task, labels and tokenizer)."""
    arts = [load_artifact(path) for path in model_dirs]
    return arts[0] if len(arts) == 1 else ensemble_of(arts, combine)  # type: ignore[arg-type]


def evaluate_file(
    art: Artifact,
    data: Path,
    batch_size: int,
    text_column: str | None = None,
    label_column: str | None = None,
    report_dir: Path | None = None,
) -> dict[str, Any]:
    """Score ``art`` on a labelled file in its task's input format (columns default to the training ones)."""
    cols = Columns(
        text=text_column or art.columns.text,
        label=label_column or art.columns.label or "label",
        text_pair=art.columns.text_pair,
    )
    rows = art.task.read_eval(data, cols, art.task_params, art.labels)
    features = tokenize_dataset(art.task, art.task_params, art.tokenizer, rows, art.labels)
    collator = art.task.collator(art.tokenizer, art.task_params)
    metrics = {"eval": evaluate_artifact(art, features, rows, collator, batch_size)}
    if report_dir is not None:
        write_report(report_dir, metrics, art.labels)
    _print_table(metrics)
    return metrics["eval"]
