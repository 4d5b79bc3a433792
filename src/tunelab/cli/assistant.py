"""`tunelab apps assistant-eval`: the assistant's runs scored on held-out data, and its routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.common import apps_app, fail, setup_logging
from tunelab.errors import TunelabError


@apps_app.command("assistant-eval")
def assistant_eval(
    settings_file: Annotated[
        Path, typer.Argument(help="Assistant settings (examples/apps/customer_service/assistant_app.yaml).")
    ],
    intent_data: Annotated[Path, typer.Option(help="Held-out intent file (text,label), for the intent run.")],
    answers_data: Annotated[
        Path, typer.Option(help="Held-out question/answer pairs, for the answer-selection run.")
    ],
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Longest generated reply, in tokens (with a generator_run).")
    ] = 64,
) -> None:
    """Intent and answer-selection metrics, each path's share of the held-out questions, reply quality.

    JSON to stdout: ``intent`` (macro-F1 beside the majority baseline), ``answers`` (recall@k of the
    retrieval run), ``routes`` (the distinct held-out questions answered by a stored answer, the
    generator or the handoff message at the settings' thresholds) and ``replies`` (chrF and exact
    match of the sent replies against the reference answers, per path, beside the best stored answer,
    the handoff message and, with a generator, its greedy reply to every question).
    """
    setup_logging()
    try:
        from tunelab.workflows.assistant import assistant_eval as evaluate_assistant

        out = evaluate_assistant(settings_file, intent_data, answers_data, batch_size, max_new_tokens)
    except TunelabError as exc:
        fail(exc)
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
