"""Request and response bodies: HF-style ``/v1/predict`` per task, OpenAI-style generation and embeddings.

Every 4xx/5xx body is an :class:`ErrorBody`, shaped like OpenAI's error object so OpenAI clients
surface the message, plus the request id that ties it to the access log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from tunelab.tasks.schemas import ModelName

Texts = Annotated[list[str], Field(min_length=1)]
Stop = str | Annotated[list[str], Field(max_length=4)] | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """The error object inside every 4xx/5xx body, shaped like OpenAI's so its clients show ``message``."""

    message: str = Field(description="What went wrong and, for client errors, what to change.")
    type: str = Field(description="Error class, e.g. invalid_request_error, rate_limit_error.")
    param: str | None = Field(default=None, description="The request field at fault, e.g. inputs[1].")
    code: int | str = Field(description="The HTTP status code, or OpenAI's string code (model_not_found).")
    request_id: str | None = Field(default=None, description="Matches X-Request-ID and the access log.")


class ErrorBody(BaseModel):
    """Every error response's body: ``{"error": {...}}``, as OpenAI returns it."""

    error: ErrorDetail


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``, OpenAI's request: one text or a batch, float or base64 vectors."""

    input: str | Texts = Field(description="One text or a list of texts.")
    model: ModelName = None
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64 = little-endian float32 bytes, as OpenAI sends them."
    )
    user: str | None = None


class Embedding(BaseModel):
    """One input's sentence embedding, at ``index`` of the request's inputs."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    """Token counts of a request, as OpenAI reports them (``completion_tokens`` is 0 for embeddings)."""

    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """``POST /v1/embeddings`` answer: one embedding per input, in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class StreamOptions(_Body):
    """OpenAI's ``stream_options``: ``include_usage`` adds a final usage chunk to a stream."""

    include_usage: bool = False


class _Sampling(_Body):
    model: ModelName = None
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
    """``POST /v1/completions``: continue a raw prompt (OpenAI's legacy completions API)."""

    prompt: str = Field(description="Raw prompt text (no chat template applied).")
    max_tokens: int = Field(default=16, ge=1, description="New tokens to generate at most.")


class ChatMessage(_Body):
    """One turn of a chat; the list is rendered with the model's chat template."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: answer a conversation (OpenAI's chat API)."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(default=None, ge=1, description="Default: the server's max_new_tokens.")
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="Alias of max_tokens (newer API)."
    )


FinishReason = Literal["stop", "length", "content_filter"]


class ContentFilter(BaseModel):
    """Why the safety gate withheld a generated reply (``finish_reason: content_filter``)."""

    label: str = Field(description="The safety run's label that blocked the reply.")
    score: float = Field(description="That label's probability (the highest over the reply's windows).")


_FILTERED = "Set when the safety gate replaced the reply by its refusal: the label and score that blocked it."


class CompletionChoice(BaseModel):
    """The generated text of a completion; ``n`` is always 1, so ``index`` is 0."""

    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None
    content_filter: ContentFilter | None = Field(default=None, description=_FILTERED)


class _Generated(BaseModel):
    """Fields every OpenAI completion object and chunk carries."""

    id: str
    created: int
    model: str


class CompletionResponse(_Generated):
    """``POST /v1/completions`` answer (non-streaming)."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    """The assistant's reply in a chat completion."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """The reply of a chat completion and why generation ended."""

    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    content_filter: ContentFilter | None = Field(default=None, description=_FILTERED)


class ChatCompletionResponse(_Generated):
    """``POST /v1/chat/completions`` answer (non-streaming)."""

    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class AnswerCandidate(BaseModel):
    """A stored answer the answer-selection run ranked for the message."""

    text: str
    score: float = Field(description="Its score (cosine similarity to the message).")


class AssistantRouting(BaseModel):
    """How the assistant answered: the intent, the best stored answers, and which path replied."""

    intent: str = Field(description="The intent run's label for the last user message.")
    intent_confidence: float = Field(description="That label's probability.")
    answer_score: float = Field(description="The best stored answer's score.")
    path: Literal["answer", "generator", "handoff"] = Field(
        description="answer: the best stored answer; generator: the generator run wrote the reply; "
        "handoff: the settings' handoff_message (below the thresholds, no generator)."
    )
    candidates: list[AnswerCandidate] = Field(description="The top_k stored answers, best first.")


class AssistantChatResponse(ChatCompletionResponse):
    """An assistant's ``/v1/chat/completions`` answer: OpenAI's object plus ``assistant`` (extra field)."""

    assistant: AssistantRouting


class ChatDelta(BaseModel):
    """What one streamed chunk adds: the role in the first chunk, then text pieces."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    """A streamed chat chunk's content; ``finish_reason`` is set only in the finish chunk."""

    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    content_filter: ContentFilter | None = Field(default=None, description=_FILTERED)


class ChatCompletionChunk(_Generated):
    """One server-sent event of a streamed chat completion (``stream: true``)."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """The served model as ``GET /v1/models`` lists it (one model per process)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tunelab"


class ModelList(BaseModel):
    """``GET /v1/models`` answer: the one model this process serves."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class Status(BaseModel):
    """``/health`` and ``/ready`` answer."""

    status: str
    pid: int = Field(
        default_factory=os.getpid, description="The answering process (tells `--workers` apart)."
    )


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


class ApiError(HTTPException):
    """An error whose body names the request field at fault and, where OpenAI has one, its string code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(status, message)
        self.param = param
        self.code = code


def error_response(
    status: int,
    message: str,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    """The one error response: ``ErrorBody`` JSON with the status, a type and the request id."""
    detail = ErrorDetail(
        message=message,
        type=ERROR_TYPES.get(status, "server_error"),
        param=param,
        code=code or status,
        request_id=request_id,
    )
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=status, headers=headers)
