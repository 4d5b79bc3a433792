"""OpenAI-compatible ``/v1/completions`` and ``/v1/chat/completions`` for a generating model, with SSE.

A causal LM's requests decode continuously batched in the model thread (``serving.decode_loop``: a
request joins the running batch at the next step and leaves it at the step it ends); other
generating models (an encoder-decoder run) decode one request at a time through a batcher of size 1.
Either way the same bounded queue, 429, timeout and drain apply. Streaming uses transformers'
``AsyncTextIteratorStreamer``; ``StopScanner`` (``tunelab.inference.generate``, shared with
``tunelab predict --stream``) holds back just enough text that a stop string split across pieces
never leaks. An encoder-decoder run decodes with its run's options, as ``tunelab predict`` does, so
a request that sets decoding fields is refused rather than silently decoded otherwise.

With a safety gate (``safety`` settings, ``serving.safety``) every reply is judged whole before any
of it is sent: a streaming request then gets its reply as one piece once decoding and the check are
done, so blocked text never reaches the client, at the cost of a first token that waits for the
last. A blocked reply is replaced by the refusal with ``finish_reason: "content_filter"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from transformers import AsyncTextIteratorStreamer

from tunelab.inference.generate import Generation, GenerationJob, StopScanner
from tunelab.serving.routes import MODEL_ROUTE_ERRORS, Context
from tunelab.serving.schemas import (
    ApiError,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ContentFilter,
    ErrorBody,
    ErrorDetail,
    Usage,
)

logger = logging.getLogger(__name__)


def _stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else [s for s in stop or [] if s]


def _sse(payload: BaseModel | str) -> str:
    data = payload if isinstance(payload, str) else payload.model_dump_json(exclude_none=False)
    return f"data: {data}\n\n"


@dataclass(frozen=True)
class Piece:
    """What one streamed event carries: the role, a text piece, the finish (and why), or the usage."""

    role: bool = False
    text: str = ""
    finish: Any = None
    flagged: ContentFilter | None = None
    usage: Usage | None = None


Chunk = Callable[[Piece], BaseModel]  # one route's event payload for a piece


def add_generation_routes(app: FastAPI, ctx: Context) -> None:
    """Completions and chat completions for a predictor that generates."""
    predictor = ctx.predictor
    run_decoding = predictor.run_decoding

    def check_request(body: Any, max_tokens: int | None) -> None:
        """404 for another model; 422 for decoding an encoder-decoder run cannot do.

        Such a run decodes deterministically with its own options, so it refuses sampling and a
        ``max_tokens`` below its own cap (it would be ignored); greedy requests are what it does anyway.
        """
        ctx.check_model(body.model)
        if run_decoding is None:
            return
        asked = body.model_dump(include={"temperature", "top_p", "top_k"} & body.model_fields_set)
        if asked.get("temperature", 0) > 0 or asked.get("top_p", 1) < 1 or asked.get("top_k", 0) > 0:
            raise ApiError(
                422,
                f"temperature: {predictor.model_id} is an encoder-decoder run that decodes with its own "
                f"options {run_decoding}, as tunelab predict does; drop the sampling fields or send "
                "temperature 0",
                "temperature",
            )
        if max_tokens is not None and max_tokens < run_decoding["max_new_tokens"]:
            raise ApiError(
                422,
                f"max_tokens: {max_tokens}; {predictor.model_id} decodes up to its run's max_new_tokens="
                f"{run_decoding['max_new_tokens']} (task.params.max_target_length); ask for at least that",
                "max_tokens",
            )

    def stream(job: GenerationJob, chunk: Chunk, include_usage: bool, request: Request) -> StreamingResponse:
        """SSE: role chunk, text chunks, a finish chunk, optional usage chunk, ``[DONE]``."""
        job.streamer = AsyncTextIteratorStreamer(
            predictor.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        [future] = ctx.enqueue("generate", [job])
        deadline = ctx.deadline()

        async def events() -> AsyncIterator[str]:
            scanner = StopScanner(job.stop)
            try:
                yield _sse(chunk(Piece(role=True)))
                async for piece in _until(job.streamer, deadline):
                    if text := scanner.feed(piece):
                        yield _sse(chunk(Piece(text=text)))
                result = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
                if text := scanner.flush():
                    yield _sse(chunk(Piece(text=text)))
                count_tokens(ctx, result)
                yield _sse(chunk(Piece(finish=result.finish_reason)))
                if include_usage:
                    yield _sse(chunk(Piece(usage=generation_usage(result))))
            except asyncio.TimeoutError:
                yield _error_event(504, "timeout_error", "stream exceeded request_timeout_s", request)
            except Exception as exc:  # headers are sent: the error can only travel as an event
                logger.error(
                    json.dumps({"request_id": request.state.request_id, "error": type(exc).__name__})
                )
                yield _error_event(500, "server_error", "generation failed; see the server log", request)
            finally:
                job.cancelled.set()
                future.cancel()
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    def replay(result: Generation, flagged: ContentFilter | None, chunk: Chunk, usage: bool) -> Any:
        """SSE of a reply decoded and judged before anything is sent: the whole text as one piece."""
        events = [chunk(Piece(role=True)), *([chunk(Piece(text=result.text))] if result.text else [])]
        events.append(chunk(Piece(finish=result.finish_reason, flagged=flagged)))
        events += [chunk(Piece(usage=generation_usage(result)))] if usage else []
        return StreamingResponse(iter([*map(_sse, events), _sse("[DONE]")]), media_type="text/event-stream")

    async def respond(job: GenerationJob, body: Any, request: Request, chunk: Chunk, final: Any) -> Any:
        """SSE when the client asked to stream, else ``final(generation, flagged)`` once it is done.

        With a safety gate, the reply is decoded and judged before the first byte goes out.
        """
        include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
        if body.stream and predictor.gate is None:
            return stream(job, chunk, include_usage, request)
        deadline = ctx.deadline()
        result, flagged = await screen(ctx, await run_generation(ctx, job, deadline), request, deadline)
        return replay(result, flagged, chunk, include_usage) if body.stream else final(result, flagged)

    @app.post("/v1/completions", response_model=CompletionResponse, responses=MODEL_ROUTE_ERRORS)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        """Continue a raw prompt (OpenAI-compatible; ``stream: true`` for SSE)."""
        check_request(body, body.max_tokens if "max_tokens" in body.model_fields_set else None)
        job = await generation_job(ctx, body.prompt, body.max_tokens, body, request, chat=False)
        head = response_head("cmpl", predictor.model_id)

        def chunk(piece: Piece) -> CompletionResponse:
            choice = CompletionChoice(
                text=piece.text, finish_reason=piece.finish, content_filter=piece.flagged
            )
            return CompletionResponse(**head, choices=[] if piece.usage else [choice], usage=piece.usage)

        return await respond(
            job,
            body,
            request,
            chunk,
            lambda result, flagged: CompletionResponse(
                **head,
                choices=[
                    CompletionChoice(
                        text=result.text, finish_reason=result.finish_reason, content_filter=flagged
                    )
                ],
                usage=generation_usage(result),
            ),
        )

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=MODEL_ROUTE_ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        """Answer a conversation using the model's chat template (OpenAI-compatible; SSE with ``stream``)."""
        check_request(body, body.max_completion_tokens or body.max_tokens)
        ctx.refuse_blank(
            [(f"messages[{i}].content", m.content) for i, m in enumerate(body.messages) if m.role == "user"]
        )
        job = await chat_job(ctx, body, request)
        head = response_head("chatcmpl", predictor.model_id)

        def chunk(piece: Piece) -> ChatCompletionChunk:
            if piece.usage is not None:
                choices = []
            elif piece.role:
                choices = [ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))]
            else:
                delta = ChatDelta(content=piece.text or None)
                choices = [
                    ChatChunkChoice(delta=delta, finish_reason=piece.finish, content_filter=piece.flagged)
                ]
            return ChatCompletionChunk(**head, choices=choices, usage=piece.usage)

        return await respond(
            job,
            body,
            request,
            chunk,
            lambda result, flagged: ChatCompletionResponse(
                **head,
                choices=[chat_choice(result.text, result.finish_reason, flagged)],
                usage=generation_usage(result),
            ),
        )


async def generation_job(
    ctx: Context, prompt: str, max_tokens: int, body: Any, request: Request, chat: bool
) -> GenerationJob:
    """The job of one request after its limits: 422 beyond max_new_tokens or max_input_tokens."""
    if max_tokens > ctx.settings.max_new_tokens:
        raise ctx.limit_error(
            f"max_tokens: {max_tokens}; at most max_new_tokens={ctx.settings.max_new_tokens}",
            "new_tokens",
            "max_tokens",
        )
    specials = ctx.predictor.prompt_has_specials(chat)
    await ctx.count_tokens([("messages" if chat else "prompt", prompt)], specials)
    ctx.log(request, [prompt])
    return GenerationJob(
        prompt=prompt,
        max_new_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=_stop_list(body.stop),
        seed=body.seed,
        add_special_tokens=specials,
    )


async def chat_job(ctx: Context, body: ChatCompletionRequest, request: Request) -> GenerationJob:
    """The job answering a conversation with the model's chat template (422 if it cannot take it)."""
    try:
        prompt = ctx.predictor.chat_prompt([m.model_dump() for m in body.messages])
    except ValueError as exc:
        raise ApiError(422, str(exc), "messages") from None
    max_tokens = body.max_completion_tokens or body.max_tokens or ctx.settings.max_new_tokens
    return await generation_job(ctx, prompt, max_tokens, body, request, chat=True)


async def run_generation(ctx: Context, job: GenerationJob, deadline: float) -> Any:
    """Decode ``job`` in the model thread (continuously batched for a causal LM); counts its tokens."""
    try:
        [result] = await ctx.run("generate", [job], deadline)
    finally:
        job.cancelled.set()  # a 504 must not leave the worker generating for nobody
    count_tokens(ctx, result)
    return result


async def screen(
    ctx: Context, result: Generation, request: Request, deadline: float
) -> tuple[Generation, ContentFilter | None]:
    """``result`` as it may be sent: unchanged, or its text replaced by the refusal when the gate blocks it.

    Counts every judged reply and each blocked one by label; the log line names the request, the
    label and the score, never the reply.
    """
    if ctx.predictor.gate is None:
        return result, None
    [verdict] = await ctx.run("safety", [result.text], deadline)
    ctx.metrics.safety_checked.inc()
    if not verdict.blocked:
        return result, None
    ctx.metrics.safety_blocked.labels(verdict.label).inc()
    logger.info(
        json.dumps(
            {
                "request_id": request.state.request_id,
                "safety": "blocked",
                "label": verdict.label,
                "score": round(verdict.score, 4),
            }
        )
    )
    refusal = ctx.predictor.gate.settings.refusal
    return replace(result, text=refusal, finish_reason="content_filter"), ContentFilter(
        label=verdict.label, score=verdict.score
    )


def chat_choice(text: str, finish_reason: Any, flagged: ContentFilter | None = None) -> ChatChoice:
    """The one choice of a chat completion."""
    return ChatChoice(
        message=AssistantMessage(content=text), finish_reason=finish_reason, content_filter=flagged
    )


def count_tokens(ctx: Context, result: Generation) -> None:
    """Feed a finished generation to the token counters and the decode-speed histogram."""
    ctx.metrics.tokens.labels("input").inc(result.prompt_tokens)
    ctx.metrics.tokens.labels("generated").inc(result.completion_tokens)
    if result.completion_tokens:
        ctx.metrics.tokens_per_s.observe(result.tokens_per_s)


def response_head(prefix: str, model: str) -> dict[str, Any]:
    """id, created and model: the same on every chunk of one response."""
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}


def generation_usage(result: Any) -> Usage:
    """The token counts of a finished generation, as OpenAI's ``usage``."""
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def _error_event(code: int, kind: str, message: str, request: Request) -> str:
    detail = ErrorDetail(message=message, type=kind, code=code, request_id=request.state.request_id)
    return _sse(ErrorBody(error=detail))


async def _until(streamer: AsyncTextIteratorStreamer, deadline: float) -> AsyncIterator[str]:
    """The streamer's pieces, raising ``asyncio.TimeoutError`` once ``deadline`` passes."""
    iterator = aiter(streamer)
    while True:
        try:
            yield await asyncio.wait_for(iterator.__anext__(), max(deadline - time.monotonic(), 0.001))
        except StopAsyncIteration:
            return
