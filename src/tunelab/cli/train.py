"""Commands that train: validate a config, train it, verify a run, search hyperparameters, estimate memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.common import OVERRIDES, app, fail, setup_logging
from tunelab.errors import ConfigError, TunelabError


@app.command(context_settings=OVERRIDES)
def validate(
    ctx: typer.Context,
    config: Path,
    data: Annotated[
        bool, typer.Option("--data", help="Also check every row of the train/dev/test files; loads no model.")
    ] = False,
) -> None:
    """Validate CONFIG (and --key.path VALUE overrides) against the schema and registries; load no model.

    With --data, also read every row of the data files exactly as train does (same file:line errors).
    """
    try:
        from tunelab.config import load_config
        from tunelab.training.plan import resolve

        plan = resolve(load_config(config, ctx.args), count_labels=data)
        if data:
            from tunelab.workflows import check_data

            setup_logging()
            summary = check_data(plan)
    except TunelabError as exc:
        fail(exc)
    typer.echo(f"{config}: valid (task {plan.task.name}, methods {[s.name for s, _ in plan.methods]})")
    if data:
        typer.echo(f"{config}: data valid ({summary})")


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in train.output_dir (none: start).")
    ] = False,
    resume_from: Annotated[Path | None, typer.Option(help="Continue from this checkpoint directory.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing train.output_dir first.")] = False,
    nproc: Annotated[
        int | None,
        typer.Option(min=1, help="Train in N local processes (torch's elastic launcher, like torchrun)."),
    ] = None,
    max_restarts: Annotated[
        int,
        typer.Option(min=0, help="With --nproc: restart the group this often after a failure; it resumes."),
    ] = 0,
) -> None:
    """Fine-tune as CONFIG says; override any key with --key.path VALUE (e.g. --train.lr 3e-5)."""
    try:
        if nproc is not None:
            signum = _launch(config, ctx.args, resume, resume_from, overwrite, nproc, max_restarts)
            if signum is not None:
                typer.echo(f"interrupted by signal {signum}; continue with --resume", err=True)
                raise typer.Exit(code=128 + signum)
            return
        if max_restarts:
            raise ConfigError("--max-restarts: only with --nproc N (torchrun has its own --max-restarts)")
        from tunelab.workflows import train_run

        result = train_run(config, ctx.args, resume, resume_from, overwrite, on_start=setup_logging)
    except TunelabError as exc:
        fail(exc)
    if result.stopped == "interrupted":
        raise typer.Exit(code=128 + (result.signal_number or 2))


def _launch(
    config: Path,
    overrides: list[str],
    resume: bool,
    resume_from: Path | None,
    overwrite: bool,
    nproc: int,
    max_restarts: int,
) -> int | None:
    """Validate CONFIG here, then run this same command (without --nproc) in ``nproc`` processes.

    Returns the signal that stopped the launch, if one did.
    """
    from tunelab.config import load_config
    from tunelab.training import check_strategy
    from tunelab.training.launch import launch_workers
    from tunelab.training.plan import resolve

    check_strategy(resolve(load_config(config, overrides)).cfg.train.distributed)
    flags = [
        *(["--resume"] if resume else []),
        *(["--resume-from", str(resume_from)] if resume_from is not None else []),
        *(["--overwrite"] if overwrite else []),
    ]
    worker = ["-m", "tunelab.cli", "train", str(config), *flags, *overrides]
    return launch_workers(worker, nproc, max_restarts)


@app.command()
def verify(
    run_dir: Path,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Largest absolute change of a dev/test metric for 'numerical'.")
    ] = 1e-6,
) -> None:
    """Train RUN_DIR's recorded config and seed again in a temp dir and compare: bitwise, numerical, differs.

    Refuses first when a recorded data file is missing or changed. Exits 1 on 'differs', listing what
    moved; inputs whose hashes changed since the run (features, tokenizer, versions) are listed too.
    """
    try:
        from tunelab.reproduce import verify_run

        verdict = verify_run(run_dir, tolerance, on_start=setup_logging)
    except TunelabError as exc:
        fail(exc)
    for line in verdict.moved:
        typer.echo(f"moved: {line}")
    if verdict.changed_inputs:
        typer.echo(f"changed since the run: {', '.join(verdict.changed_inputs)}")
    typer.echo(f"{run_dir}: {verdict.level} ({verdict.compared} metrics compared, tolerance {tolerance})")
    if verdict.level == "differs":
        raise typer.Exit(code=1)


@app.command(context_settings=OVERRIDES)
def tune(
    ctx: typer.Context,
    config: Path,
    search: Annotated[
        Path,
        typer.Option(help="Search-space YAML: config key paths -> distributions; trials, pruner, storage."),
    ],
) -> None:
    """Search hyperparameters of CONFIG with Optuna; each trial trains into train.output_dir/trials/N.

    Prints the trials best first; writes tune_results.json and best.yaml (CONFIG with the best values)
    into train.output_dir. --key.path VALUE overrides apply to every trial.
    """
    setup_logging()
    try:
        from rich.console import Console

        from tunelab.tuning import results_table
        from tunelab.tuning import tune as run_tune

        result = run_tune(config, search, ctx.args)
    except TunelabError as exc:
        fail(exc)
    Console().print(results_table(result))
    if result.best is not None:
        typer.echo(
            f"best: trial {result.best.number} ({result.metric} {result.best.value}) in {result.best.run_dir}"
        )
    if result.signal_number is not None:
        raise typer.Exit(code=128 + result.signal_number)
    if result.best is None:
        typer.echo("error: no trial completed; the table says why", err=True)
        raise typer.Exit(code=1)


@app.command(context_settings=OVERRIDES)
def estimate(
    ctx: typer.Context,
    config: Path,
    world_size: Annotated[
        int, typer.Option(min=1, help="Devices the run is spread over (data parallel).")
    ] = 1,
    shard: Annotated[
        str,
        typer.Option(
            help="none (DDP) | grad_optimizer (ZeRO-2-like) | full (ZeRO-3/FSDP-like): what is split."
        ),
    ] = "none",
    measure: Annotated[
        bool, typer.Option(help="Also run 3 optimizer steps in a fresh process and show their measured peak.")
    ] = False,
) -> None:
    """Estimate per-device training memory of CONFIG (--key.path VALUE overrides) from its model on meta.

    Parameters, gradients, AdamW state and one micro-batch's activations; the formulas are in
    src/tunelab/training/memory.py.
    """
    try:
        from rich.console import Console

        from tunelab.training.measure import memory_table
        from tunelab.workflows import estimate_memory

        result, measured = estimate_memory(config, ctx.args, world_size, shard, measure, setup_logging)
    except TunelabError as exc:
        fail(exc)
    Console().print(memory_table(result, measured))
