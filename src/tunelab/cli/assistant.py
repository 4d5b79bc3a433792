"""`tunelab apps assistant-eval`: the assistant's runs scored on held-out data, and its routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.common import apps_app, fail, setup_logging
from tunelab.errors import ConfigError, TunelabError


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
        from tunelab.apps.replies import generate_replies, reply_quality
        from tunelab.serving.predictor import load_predictor
        from tunelab.workflows import evaluate_file

        if not settings_file.name.endswith("_app.yaml"):
            raise ConfigError(
                f"{settings_file}: name the assistant's settings file *_app.yaml, as serve reads it"
            )
        predictor = load_predictor(str(settings_file))  # the runs and generator as tunelab serve loads them
        assistant = predictor.assistant
        assert assistant is not None, "a *_app.yaml loads as an assistant"
        intent = evaluate_file(assistant.intent, intent_data, batch_size)
        art = assistant.answers
        answers = evaluate_file(art, answers_data, batch_size)
        held_out = art.task.read_eval(answers_data, art.columns, art.task_params, art.labels)
        decisions = assistant.decide(held_out["text"], batch_size)
        generated = None
        if predictor.lm is not None:
            generated = generate_replies(
                predictor.lm, predictor.tokenizer, held_out["text"], max_new_tokens, batch_size
            )
        replies = reply_quality(
            decisions, held_out["positives"], assistant.settings.handoff_message, generated
        )
    except TunelabError as exc:
        fail(exc)
    routes = {path: replies[path]["questions"] for path in ("answer", "generator", "handoff")}
    out = {"intent": intent, "answers": answers, "routes": routes, "replies": replies}
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
