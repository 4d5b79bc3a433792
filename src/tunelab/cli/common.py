"""The Typer apps and what every command shares: error exits and logging set-up."""

from __future__ import annotations

import logging
from typing import NoReturn

import typer

from tunelab.errors import ConfigError, TunelabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="tunelab: fine-tune a pretrained transformer on your data, evaluate it, and predict with it.",
)
data_app = typer.Typer(no_args_is_help=True, help="Shipped datasets.")
app.add_typer(data_app, name="data")
apps_app = typer.Typer(no_args_is_help=True, help="Application recipes (examples/apps/).")
app.add_typer(apps_app, name="apps")
logger = logging.getLogger("tunelab")
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def _process_start() -> None:
    # tunelab never downloads: switch the hub off before any library that reads it is imported.
    from tunelab.assets import hub_offline

    hub_offline()


def fail(exc: TunelabError) -> NoReturn:
    """Print ``exc`` and exit: 2 for a config error, 1 for any other tunelab error."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2 if isinstance(exc, ConfigError) else 1)


def setup_logging(rank: int = 0) -> None:
    """Our logs via rich; the libraries' own per-call progress bars off (the loop has one)."""
    import datasets
    from transformers.utils import logging as hf_logging

    from tunelab.log import setup_logging

    setup_logging("INFO", rank)
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # unannotated in transformers
