"""``/v1/predict`` of a label per input: the best label, its probability and every label's.

Served by ``classification`` (which adds ``explain`` to the request) and, through ``LABEL_SCHEMA``,
by the other tasks that give one label per input (few-/zero-shot, embedding and image
classification).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from tunelab.tasks.schemas import ExplainOptions, Explanations, ServeSchema, TextsRequest, text_records


class ClassificationRequest(TextsRequest, ExplainOptions):
    """``/v1/predict`` of a classification model: one text or a list, optionally explained."""


class LabelScore(BaseModel):
    """One label and its probability."""

    label: str
    score: float


class ClassificationPrediction(BaseModel):
    """The prediction for one input text: best label, its probability and every label's."""

    label: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability.")
    scores: list[LabelScore] = Field(description="Every label's probability, highest first.")
    labels: list[str] | None = Field(
        default=None, description="Multi-label models only: every label at or above the threshold."
    )
    explanations: Explanations = None


class ClassificationResponse(BaseModel):
    """``/v1/predict`` response of a classification model: the model id and one prediction per input."""

    model: str
    predictions: list[ClassificationPrediction] = Field(description="One per input, in input order.")


def classification_response(model: str, predictions: Sequence[dict[str, Any]]) -> ClassificationResponse:
    """Map the classification task's postprocess output to the response schema."""
    out = []
    for pred in predictions:
        ranked = sorted(pred["probabilities"].items(), key=lambda kv: -kv[1])
        out.append(
            ClassificationPrediction(
                label=pred["label"],
                score=pred["probabilities"][pred["label"]],
                scores=[LabelScore(label=name, score=p) for name, p in ranked],
                labels=pred.get("labels"),
                explanations=pred.get("explanations"),
            )
        )
    return ClassificationResponse(model=model, predictions=out)


# labels + probabilities for a text: also served by the few-/zero-shot tasks, which do not explain
LABEL_SCHEMA = ServeSchema(TextsRequest, text_records, ClassificationResponse, classification_response)
