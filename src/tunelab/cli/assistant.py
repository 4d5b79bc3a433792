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
) -> None:
    """Intent metrics, answer-selection metrics, and how many held-out questions each path answers.

    JSON to stdout: ``intent`` (macro-F1 beside the majority baseline), ``answers`` (recall@k of the
    retrieval run) and ``routes`` (the distinct held-out questions answered by a stored answer, the
    generator or the handoff message at the settings' thresholds).
    """
    setup_logging()
    try:
        from tunelab.apps.assistant import load_assistant, load_settings
        from tunelab.workflows import evaluate_file

        assistant = load_assistant(load_settings(settings_file))
        intent = evaluate_file(assistant.intent, intent_data, batch_size)
        art = assistant.answers
        answers = evaluate_file(art, answers_data, batch_size)
        questions = art.task.read_eval(answers_data, art.columns, art.task_params, art.labels)["text"]
        routes = assistant.route_counts(questions, batch_size)
    except TunelabError as exc:
        fail(exc)
    typer.echo(json.dumps({"intent": intent, "answers": answers, "routes": routes}, indent=2))
