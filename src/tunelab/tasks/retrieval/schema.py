"""``/v1/predict`` of a retrieval model: texts (+ ``top_k``) in, each one's best candidates out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from tunelab.tasks.schemas import ServeSchema, TextsRequest, text_records

TOP_K_LIMIT = 100  # most candidates one query may ask for


class RetrievalRequest(TextsRequest):
    """One query text or a list, and how many candidates to return for each."""

    top_k: int | None = Field(
        default=None,
        ge=1,
        le=TOP_K_LIMIT,
        description="Candidates per query, best first; default: the run's task.params.top_k (5 unless set).",
    )


class Hit(BaseModel):
    """One candidate of the model's stored set."""

    index: int = Field(description="The candidate's id (its position in the run's candidate list).")
    text: str = Field(description="The candidate text.")
    score: float = Field(description="Cosine similarity of query and candidate embeddings, in [-1, 1].")


class RetrievalPrediction(BaseModel):
    """The ranked candidates of one query."""

    hits: list[Hit] = Field(description="The top_k candidates, highest score first.")


class RetrievalResponse(BaseModel):
    """``/v1/predict`` response of a retrieval model: the model id and one ranking per query."""

    model: str
    predictions: list[RetrievalPrediction] = Field(description="One per input, in input order.")


def retrieval_records(body: RetrievalRequest) -> list[dict[str, Any]]:
    """Raw records: each text, with the request's ``top_k`` when it sets one."""
    extra = {"top_k": body.top_k} if body.top_k is not None else {}
    return [{**record, **extra} for record in text_records(body)]


def retrieval_response(model: str, predictions: Sequence[dict[str, Any]]) -> RetrievalResponse:
    """Map the retrieval task's postprocess output to the response schema."""
    return RetrievalResponse(
        model=model, predictions=[RetrievalPrediction.model_validate(p) for p in predictions]
    )


SERVE_SCHEMA = ServeSchema(RetrievalRequest, retrieval_records, RetrievalResponse, retrieval_response)
