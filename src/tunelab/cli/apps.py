"""Application recipes' commands (``examples/apps/``): baselines printed beside a tuned run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.common import OVERRIDES, apps_app, fail, setup_logging
from tunelab.errors import TunelabError


@apps_app.command("baselines", context_settings=OVERRIDES)
def baselines(
    ctx: typer.Context,
    config: Path,
    run: Annotated[
        Path | None, typer.Option(help="A run trained from CONFIG (its dir or best/): scored as 'tuned'.")
    ] = None,
    split: Annotated[str, typer.Option(help="dev, or test (needs data.test_file).")] = "test",
) -> None:
    """Score a retrieval CONFIG's baselines (BM25, popularity, untuned model) and an optional tuned RUN.

    All rank the same candidates with the task's metrics; a table goes to stderr, JSON to stdout.
    """
    setup_logging()
    try:
        from rich.console import Console

        from tunelab.apps.baselines import compare
        from tunelab.config import load_config
        from tunelab.evaluation.report import metrics_table
        from tunelab.training import resolve

        plan = resolve(load_config(config, list(ctx.args)))
        data = plan.task.load_data(plan.cfg.data, plan.task_params, plan.cfg.train.seed)
        scores = compare(plan, data, split, run)
    except TunelabError as exc:
        fail(exc)
    Console(stderr=True).print(metrics_table(scores))
    typer.echo(json.dumps(scores, indent=2))
