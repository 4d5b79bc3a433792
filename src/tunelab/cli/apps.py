"""Commands of the application recipes (``examples/apps/``): baselines scored like a task's own eval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunelab.cli.common import OVERRIDES, app, fail, setup_logging
from tunelab.errors import TunelabError

baseline_app = typer.Typer(no_args_is_help=True, help="Baselines scored on a run config's data and metrics.")
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("popularity", context_settings=OVERRIDES)
def baseline_popularity(ctx: typer.Context, config: Path) -> None:
    """Rank a retrieval CONFIG's candidates by train clicks, the same list for every query; metrics JSON.

    Scored on the config's test split (dev without one) and candidate set, with the retrieval task's
    metrics, so the figures compare with the model's; --key.path VALUE overrides apply. Loads no model.
    """
    setup_logging()
    try:
        from tunelab.apps.recommend import popularity_baseline
        from tunelab.config import load_config

        metrics = popularity_baseline(load_config(config, ctx.args))
    except TunelabError as exc:
        fail(exc)
    typer.echo(json.dumps(metrics, indent=2))
