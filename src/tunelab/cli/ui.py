"""`tunelab ui`: the web console over a directory of runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.common import app, fail, setup_logging
from tunelab.errors import TunelabError


@app.command()
def ui(
    runs: Annotated[Path, typer.Option(help="Root of the runs shown; runs started here go below it.")] = Path(
        "runs"
    ),
    examples: Annotated[Path, typer.Option(help="Dir of the example configs a run starts from.")] = Path(
        "examples"
    ),
    host: Annotated[
        str, typer.Option(help="Interface to bind; beyond loopback needs TUNELAB_UI_API_KEY.")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
) -> None:
    """Serve the web console: runs table, live curves, comparisons, new runs, a model playground.

    The key comes from the environment only (TUNELAB_UI_API_KEY), never the command line, where
    every local user could read it in the process list.
    """
    setup_logging()
    try:
        from tunelab.console.app import check_exposure, create_app, run

        api_key = os.environ.get("TUNELAB_UI_API_KEY") or None
        check_exposure(host, api_key)
        runs.mkdir(parents=True, exist_ok=True)
        web = create_app(runs, examples, api_key)
    except TunelabError as exc:
        fail(exc)
    typer.echo(f"tunelab console: http://{host}:{port}/ (runs under {runs})")
    run(web, host, port)
