"""Customer-service assistant: an intent run and an answer-selection run decide who answers a message.

Each user message goes through both saved runs in one batch: the intent classifier
(``classification``) names the intent and its probability, the answer-selection run (``retrieval``,
a bi-encoder over the stored answers) gives the best stored answers and their scores. The stored
answer is the reply when both clear their thresholds (``min_intent_confidence``, ``min_answer_score``);
otherwise the generator answers (a causal LM, e.g. the SFT'd SmolLM2 of ``examples/sft_smollm2.yaml``)
or, without one, the fixed ``handoff_message``. An intent that always goes to a person
(``handoff_intents``) gets the handoff message, never a stored or generated reply. The thresholds
are the product's choice, so they live in the settings file
(``examples/apps/customer_service/assistant_app.yaml``); ``tunelab apps assistant-eval`` shows how
many held-out questions each path takes at those thresholds and scores the replies (``apps.replies``).

Decoding is left to the caller: ``tunelab serve`` runs the generator in its continuous decode loop,
so a reply that needs generating joins the other generating requests there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunelab.apps.settings import classification_run, load_app_settings
from tunelab.errors import ConfigError
from tunelab.inference.artifact import Artifact, load_artifact
from tunelab.inference.predict import predict_records
from tunelab.tasks.retrieval.schema import TOP_K_LIMIT

logger = logging.getLogger(__name__)

Route = Literal["answer", "generator", "handoff"]


class AssistantSettings(BaseModel):
    """An ``*_app.yaml`` naming the assistant's runs and when it falls back (not a run config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="assistant", description="Model name clients send as `model`.")
    intent_run: str = Field(description="Intent classification run dir (or its best/).")
    answers_run: str = Field(description="Answer-selection (retrieval) run dir; it stores the answers.")
    generator_run: str | None = Field(
        default=None,
        description="Causal LM run dir or model that answers below the thresholds; none: handoff_message.",
    )
    min_intent_confidence: float = Field(
        default=0.0, ge=0, le=1, description="Lowest intent probability a stored answer is given with."
    )
    min_answer_score: float = Field(
        default=0.0, ge=-1, le=1, description="Lowest answer score (cosine) a stored answer is given with."
    )
    handoff_intents: list[str] = Field(
        default_factory=list,
        description="Intents always given handoff_message (e.g. politics), never a stored or generated one.",
    )
    top_k: int = Field(
        default=5, ge=1, le=TOP_K_LIMIT, description="Best stored answers listed with each reply."
    )
    handoff_message: str = Field(
        default="Let me pass you to a colleague who can help with that.",
        min_length=1,
        description="Reply when no stored answer qualifies and there is no generator.",
    )


def load_settings(path: Path) -> AssistantSettings:
    """Validate an assistant settings file; all problems at once, each naming its key."""
    return load_app_settings(path, AssistantSettings, "assistant settings")


@dataclass(frozen=True)
class Decision:
    """Who answers one message, and why.

    Attributes:
        intent: the intent run's label; ``intent_confidence`` its probability.
        answer_score: the best stored answer's score; ``candidates`` the ``top_k`` best, highest first.
        path: ``answer`` (the best stored answer is the reply), ``generator`` or ``handoff``.
        reply: the reply text; None when the generator must write it.
    """

    intent: str
    intent_confidence: float
    answer_score: float
    candidates: list[dict[str, Any]]
    path: Route
    reply: str | None


@dataclass
class Assistant:
    """The loaded intent and answer-selection runs, with the settings that route between them."""

    settings: AssistantSettings
    intent: Artifact
    answers: Artifact

    def decide(self, texts: Sequence[str], batch_size: int = 16) -> list[Decision]:
        """One decision per user message; both runs predict the whole batch at once."""
        intents = predict_records(self.intent, [{"text": text} for text in texts], batch_size)
        queries = [{"text": text, "top_k": self.settings.top_k} for text in texts]
        answers = predict_records(self.answers, queries, batch_size)
        return [self._decide(i, a) for i, a in zip(intents, answers, strict=True)]

    def _decide(self, intent: dict[str, Any], answers: dict[str, Any]) -> Decision:
        s = self.settings
        confidence = float(intent["probabilities"][intent["label"]])
        candidates = answers["hits"]
        score = float(candidates[0]["score"])
        confident = confidence >= s.min_intent_confidence and score >= s.min_answer_score
        path: Route
        reply: str | None
        if intent["label"] in s.handoff_intents:
            path, reply = "handoff", s.handoff_message
        elif confident:
            path, reply = "answer", candidates[0]["text"]
        else:
            path, reply = ("generator", None) if s.generator_run else ("handoff", s.handoff_message)
        return Decision(intent["label"], confidence, score, candidates, path, reply)


def _check_predictions(settings: AssistantSettings, intent: Artifact, answers: Artifact) -> None:
    """Refuse runs whose predictions the assistant cannot read (e.g. the two swapped), before serving.

    The probe also embeds the answer run's stored answers once, so the first request does not wait.
    """
    classification_run(intent, "intent_run")
    probe = [{"text": "hello", "top_k": 1}]
    if "hits" not in predict_records(answers, probe, 1)[0]:
        raise ConfigError(
            f"answers_run: {settings.answers_run} ({answers.task.name}) ranks no stored answers; "
            "name a retrieval run"
        )


def load_assistant(settings: AssistantSettings, device: str = "cpu") -> Assistant:
    """Load the intent and answer-selection runs and check the settings against them."""
    intent, answers = (
        load_artifact(Path(settings.intent_run), device),
        load_artifact(Path(settings.answers_run), device),
    )
    _check_predictions(settings, intent, answers)
    unknown = sorted(set(settings.handoff_intents) - set(intent.labels))
    if unknown:
        raise ConfigError(
            f"handoff_intents: {unknown} are not intents of {settings.intent_run}; "
            f"its intents: {', '.join(intent.labels)}"
        )
    logger.info(
        "assistant %s: %d intents (%s), %d stored answers (%s)",
        settings.name,
        len(intent.labels),
        settings.intent_run,
        len(answers.labels),
        settings.answers_run,
    )
    return Assistant(settings, intent, answers)
