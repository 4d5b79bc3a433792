"""``tunelab apps assistant-eval``: an assistant app's runs scored on held-out data, its routes and replies.

The app's settings file loads as ``tunelab serve`` loads it (``serving.predictor.load_predictor``:
the intent and answer-selection runs, and the generator when there is one), so what is scored is
what is served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from tunelab.apps.assistant import Route
from tunelab.apps.replies import generate_replies, reply_quality
from tunelab.errors import ConfigError
from tunelab.serving.predictor import load_predictor
from tunelab.workflows import evaluate_file


def assistant_eval(
    settings_file: Path, intent_data: Path, answers_data: Path, batch_size: int, max_new_tokens: int
) -> dict[str, Any]:
    """``intent`` and ``answers`` metrics, ``routes`` (held-out questions per path) and ``replies``.

    ``replies`` is ``apps.replies.reply_quality`` of the held-out questions of ``answers_data``; with
    a generator, its greedy reply of at most ``max_new_tokens`` to every question is scored too.
    """
    if not settings_file.name.endswith("_app.yaml"):
        raise ConfigError(
            f"{settings_file}: name the assistant's settings file *_app.yaml, as serve reads it"
        )
    predictor = load_predictor(str(settings_file))
    assistant = predictor.assistant
    assert assistant is not None, "a *_app.yaml loads as an assistant"
    intent = evaluate_file(assistant.intent, intent_data, batch_size)
    art = assistant.answers
    answers = evaluate_file(art, answers_data, batch_size)
    held_out = art.task.read_eval(answers_data, art.columns, art.task_params, art.labels)
    decisions = assistant.decide(held_out["text"], batch_size)
    generated = None
    if predictor.lm is not None:
        questions = held_out["text"]
        generated = generate_replies(predictor.lm, predictor.tokenizer, questions, max_new_tokens, batch_size)
    replies = reply_quality(decisions, held_out["positives"], assistant.settings.handoff_message, generated)
    routes = {path: replies[path]["questions"] for path in get_args(Route)}
    return {"intent": intent, "answers": answers, "routes": routes, "replies": replies}
