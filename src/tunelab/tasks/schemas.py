"""What a task declares to be served at ``/v1/predict``: its request/response bodies and their mapping.

Each task that serves sets ``TaskSpec.serve_schema``; the server reads it and needs no per-task code.
Response bodies follow the Hugging Face inference API's shapes, and every body forbids unknown keys so
a client's typo is a 422 naming the key, not silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Texts = Annotated[list[str], Field(min_length=1)]
ModelName = Annotated[
    str | None,
    Field(description="The served model's id (GET /v1/models); absent: that model; another: 404."),
]


class RequestBody(BaseModel):
    """Base of request bodies: unknown keys are refused; ``model`` may name the served model (OpenAI's)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = None


class TextsRequest(RequestBody):
    """``/v1/predict`` of a text task: one text or a list."""

    inputs: str | Texts = Field(description="One text or a list of texts (Hugging Face inference style).")


ExplainMethod = Literal["ig", "rollout"]


class ExplainOptions(BaseModel):
    """Request options of a task whose predictions can be explained (``TaskSpec.explain_input``)."""

    explain: bool = Field(
        default=False,
        description="Add per-word attributions to each prediction (heavier: the server caps the inputs "
        "of an explained request at max_explain_items).",
    )
    explain_method: ExplainMethod = Field(
        default="ig",
        description="ig: integrated gradients over the word embeddings (signed, sums to the probability "
        "change from an all-padding input); rollout: attention rollout (cheap, unsigned, label-blind).",
    )


class WordAttribution(BaseModel):
    """One word of the input and its attribution."""

    text: str = Field(description="The word (its sub-word pieces merged): the input text[start:end].")
    start: int = Field(description="Character offset of its first character.")
    end: int = Field(description="Character offset just past its last character.")
    score: float = Field(
        description="ig: its share of the target probability's change (positive: raises it); rollout: "
        "attention flow to it (non-negative)."
    )


class Explanation(BaseModel):
    """Which words made the model predict ``target``."""

    target: str = Field(description="The explained label (the prediction's, unless another was asked).")
    word: int | None = Field(
        default=None, description="Token-level tasks: index of the word whose tag is explained."
    )
    probability: float = Field(description="The model's probability of target on this input.")
    method: ExplainMethod = Field(description="How the attributions were computed.")
    words: list[WordAttribution] = Field(description="Every word the model saw, in text order.")
    convergence_delta: float | None = Field(
        default=None,
        description="ig: sum of attributions minus the probability change from the baseline (near 0: "
        "the integral converged).",
    )


Explanations = Annotated[
    list[Explanation] | None,
    Field(description="With explain: true, the attributions of this prediction; else null."),
]


def text_records(body: TextsRequest) -> list[dict[str, Any]]:
    """``inputs`` (one text or a list) -> raw records of a text task."""
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return [{"text": text} for text in texts]


@dataclass(frozen=True)
class ServeSchema:
    """One task's ``/v1/predict``: request body, its raw records, response body and its builder.

    ``records`` turns a validated request into the task's raw input records (``TaskSpec.input_fields``);
    ``build(model_id, predictions)`` turns the task's ``postprocess`` output into the response.
    """

    request: type[BaseModel]
    records: Callable[[Any], list[dict[str, Any]]]
    response: type[BaseModel]
    build: Callable[[str, Sequence[dict[str, Any]]], BaseModel]
