"""Request and response bodies: HF-style ``/v1/predict`` per task, OpenAI-style generation and embeddings.

Every 4xx/5xx body is an :class:`ErrorBody`, shaped like OpenAI's error object so OpenAI clients
surface the message, plus the request id that ties it to the access log line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

Texts = Annotated[list[str], Field(min_length=1)]
Stop = str | Annotated[list[str], Field(max_length=4)] | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and, for client errors, what to change.")
    type: str = Field(description="Error class, e.g. invalid_request_error, rate_limit_error.")
    code: int = Field(description="The HTTP status code.")
    request_id: str | None = Field(default=None, description="Matches X-Request-ID and the access log.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class PredictRequest(_Body):
    inputs: str | Texts = Field(description="One text or a list of texts (Hugging Face inference style).")


class LabelScore(BaseModel):
    label: str
    score: float


class ClassificationPrediction(BaseModel):
    label: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability.")
    scores: list[LabelScore] = Field(description="Every label's probability, highest first.")
    labels: list[str] | None = Field(
        default=None, description="Multi-label models only: every label at or above the threshold."
    )


class ClassificationResponse(BaseModel):
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
            )
        )
    return ClassificationResponse(model=model, predictions=out)


class Entity(BaseModel):
    type: str = Field(description="Entity type, e.g. person.")
    text: str = Field(description="The entity's text, equal to inputs[start:end].")
    start: int = Field(description="Character offset of the first character in the input.")
    end: int = Field(description="Character offset just past the last character.")
    score: float = Field(description="Mean probability of the entity's word tags.")


class EntitiesPrediction(BaseModel):
    entities: list[Entity] = Field(description="Entities in text order.")


class TokenClassificationResponse(BaseModel):
    model: str
    predictions: list[EntitiesPrediction] = Field(description="One per input, in input order.")


def token_classification_response(
    model: str, predictions: Sequence[dict[str, Any]]
) -> TokenClassificationResponse:
    """Map the token classification task's postprocess output to the response schema."""
    return TokenClassificationResponse(
        model=model, predictions=[EntitiesPrediction.model_validate(p) for p in predictions]
    )


def text_records(body: PredictRequest) -> list[dict[str, Any]]:
    """``inputs`` (one text or a list) -> raw records of a text task."""
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return [{"text": text} for text in texts]


class QAInput(_Body):
    question: str = Field(min_length=1, description="The question.")
    context: str = Field(min_length=1, description="The text that may hold the answer; any length.")


class QARequest(_Body):
    inputs: QAInput | Annotated[list[QAInput], Field(min_length=1)] = Field(
        description="One {question, context} pair or a list of them."
    )


class QAPrediction(BaseModel):
    answer: str = Field(description="The answer, equal to context[start:end]; empty when no_answer.")
    start: int | None = Field(description="Character offset of the answer in the context; null if none.")
    end: int | None = Field(description="Character offset just past the answer; null if none.")
    score: float = Field(description="Probability of this answer among the n best spans and no-answer.")
    no_answer: bool = Field(description="True when the context holds no answer (SQuAD v2).")


class QAResponse(BaseModel):
    model: str
    predictions: list[QAPrediction] = Field(description="One per input, in input order.")


def qa_records(body: QARequest) -> list[dict[str, Any]]:
    """``inputs`` (one pair or a list) -> raw records of the QA task."""
    items = [body.inputs] if isinstance(body.inputs, QAInput) else body.inputs
    return [{"question": item.question, "context": item.context} for item in items]


def qa_response(model: str, predictions: Sequence[dict[str, Any]]) -> QAResponse:
    """Map the QA task's postprocess output to the response schema (the n-best list stays internal)."""
    return QAResponse(model=model, predictions=[QAPrediction.model_validate(p) for p in predictions])


@dataclass(frozen=True)
class PredictSchema:
    """One task's ``/v1/predict``: request body, its raw records, response body and its builder.

    ``records`` turns a validated request into the task's raw input records (``TaskSpec.input_fields``);
    ``build`` turns the task's ``postprocess`` output into the response.
    """

    request: type[BaseModel]
    records: Callable[[Any], list[dict[str, Any]]]
    response: type[BaseModel]
    build: Callable[[str, Sequence[dict[str, Any]]], BaseModel]


# Task name -> its /v1/predict schema: one entry per task.
PREDICT_SCHEMAS: dict[str, PredictSchema] = {
    "classification": PredictSchema(
        PredictRequest, text_records, ClassificationResponse, classification_response
    ),
    "token_classification": PredictSchema(
        PredictRequest, text_records, TokenClassificationResponse, token_classification_response
    ),
    "qa": PredictSchema(QARequest, qa_records, QAResponse, qa_response),
}


class EmbeddingRequest(_Body):
    input: str | Texts = Field(description="One text or a list of texts.")
    model: str | None = Field(default=None, description="Ignored beyond a check: one model per process.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64 = little-endian float32 bytes, as OpenAI sends them."
    )
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str | None = Field(default=None, description="Ignored beyond a check: one model per process.")
    temperature: float = Field(default=1.0, ge=0, le=2, description="0 = greedy decoding.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(default=0, ge=0, description="Sample among the k likeliest tokens; 0 = off (vLLM's).")
    stop: Stop = Field(default=None, description="Up to 4 strings that end the output (not included).")
    stream: bool = Field(default=False, description="Server-sent events, one chunk per decoded piece.")
    stream_options: StreamOptions | None = None
    n: Literal[1] = Field(default=1, description="Choices per request; one model call each, so only 1.")
    seed: int | None = Field(default=None, description="Seed for sampling, for reproducible outputs.")
    user: str | None = None


class CompletionRequest(_Sampling):
    prompt: str = Field(description="Raw prompt text (no chat template applied).")
    max_tokens: int = Field(default=16, ge=1, description="New tokens to generate at most.")


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(default=None, ge=1, description="Default: the server's max_new_tokens.")
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="Alias of max_tokens (newer API)."
    )


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class _Generated(BaseModel):
    """Fields every OpenAI completion object and chunk carries."""

    id: str
    created: int
    model: str


class CompletionResponse(_Generated):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason


class ChatCompletionResponse(_Generated):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_Generated):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tunelab"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Status(BaseModel):
    status: str


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_response(
    status: int, message: str, request_id: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error response: ``ErrorBody`` JSON with the status, a type and the request id."""
    detail = ErrorDetail(
        message=message, type=ERROR_TYPES.get(status, "server_error"), code=status, request_id=request_id
    )
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=status, headers=headers)
