"""`tunelab serve`: one model over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.common import app, fail, setup_logging
from tunelab.errors import TunelabError


@app.command()
def serve(
    model_dir: Annotated[
        str, typer.Argument(help="Model dir (tunelab or Hugging Face), shipped model name, or *_app.yaml.")
    ],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without an API key on purpose (logs a warning).")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Model processes behind the port, torch threads split between them."),
    ] = 1,
    safety: Annotated[
        Path | None,
        typer.Option(
            help="Safety gate settings file (YAML: run, block_labels, threshold, refusal) that judges "
            "every generated reply."
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP until SIGTERM; other settings from TUNELAB_SERVE_* variables (README)."""
    setup_logging()
    try:
        from tunelab.io import read_yaml
        from tunelab.log import setup_json_lines
        from tunelab.serving.app import app_from_settings, run
        from tunelab.serving.settings import load_settings
        from tunelab.serving.workers import run_workers

        explicit: dict[str, object] = {"allow_unauthenticated": True} if no_auth else {}  # else: env
        if safety is not None:
            explicit["safety"] = read_yaml(safety, "safety settings")
        settings = load_settings(model_dir=model_dir, host=host, port=port, **explicit)
        if workers > 1:
            run_workers(settings, workers)
            return
        web = app_from_settings(settings, bind_host=host)
    except TunelabError as exc:
        fail(exc)
    setup_json_lines("tunelab.serving.access")
    run(web, settings)
