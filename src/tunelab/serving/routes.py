"""Routes: validate -> check inputs (in a tokenizer thread) -> batcher -> response. No model code here."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException

from tunelab.serving.access import log_inputs
from tunelab.serving.batcher import Closed, ModelQueue, QueueFull
from tunelab.serving.metrics import ServeMetrics
from tunelab.serving.predictor import Predictor, UnreadableText
from tunelab.serving.schemas import (
    ApiError,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorBody,
    ModelCard,
    ModelList,
    Status,
    Usage,
)
from tunelab.serving.settings import ServeSettings

_ERROR_DESCRIPTIONS = {
    400: "Body cannot be decoded (not UTF-8).",
    401: "Missing or wrong API key (when the server has keys).",
    404: "`model` names a model this server does not serve (code `model_not_found`).",
    413: "Request body over max_body_bytes.",
    422: "Invalid body, or blank / unreadable text, or over a limit; `param` names the field.",
    429: "Queue full; retry after the Retry-After seconds.",
    500: "Internal error (logged by request id, never with the input).",
    503: "Starting up or shutting down.",
    504: "No result within request_timeout_s.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route: each status answers with an ``ErrorBody``."""
    return {code: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


MODEL_ROUTE_ERRORS = errors(400, 401, 404, 413, 422, 429, 500, 503, 504)  # routes taking inputs, `model`

Located = tuple[str, str]  # (where in the request, e.g. "inputs[1]"; the text)


@dataclass
class Runtime:
    """What the lifespan creates and the routes use: batchers, the tokenizer threads, readiness."""

    batchers: dict[str, ModelQueue[Any, Any]] = field(default_factory=dict)
    tokenize: Executor | None = None
    ready: bool = False
    started: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Context:
    """Everything a route handler needs, built once per app."""

    settings: ServeSettings
    predictor: Predictor
    metrics: ServeMetrics
    runtime: Runtime

    def publish_load(self) -> None:
        """Set the queue-depth and saturation gauges from the queues (each change, and each scrape)."""
        for name, queue in self.runtime.batchers.items():
            self.metrics.queue_depth.labels(name).set(queue.depth)
        self.metrics.saturation.set(max((q.saturation for q in self.runtime.batchers.values()), default=0.0))

    def limit_error(self, message: str, reason: str, param: str | None = None) -> HTTPException:
        """A 422 for a request the server refuses, counted by reason; ``param`` names the field."""
        self.metrics.rejected.labels(reason).inc()
        return ApiError(422, message, param)

    def check_model(self, name: str | None) -> None:
        """404 ``model_not_found`` unless ``name`` is absent or the served model's id (OpenAI's behaviour)."""
        if name is not None and name != self.predictor.model_id:
            raise ApiError(
                404,
                f"model: {name!r} is not served here; this server serves {self.predictor.model_id!r} "
                "(GET /v1/models)",
                "model",
                "model_not_found",
            )

    def check_batch(self, n: int, where: str) -> None:
        """422 beyond max_batch_items inputs per request."""
        limit = self.settings.max_batch_items
        if n > limit:
            raise self.limit_error(
                f"{where}: {n} items; at most max_batch_items={limit} per request", "batch_items", where
            )

    def check_explain(self, n: int, method: str) -> None:
        """422 beyond max_explain_items inputs per explained request, or for a method the model cannot run."""
        limit = self.settings.max_explain_items
        if n > limit:
            raise self.limit_error(
                f"inputs: {n} items with explain: true; at most max_explain_items={limit} per explained "
                "request (send the others without explain, or in several requests)",
                "explain_items",
                "inputs",
            )
        why = self.predictor.explain_refusal(method)
        if why is not None:
            raise self.limit_error(f"explain_method: {why}", "explain_method", "explain_method")

    def refuse_blank(self, fields: Sequence[Located]) -> None:
        """422 naming the first blank or whitespace-only text (training refuses those rows too)."""
        for where, text in fields:
            if not text.strip():
                raise self.limit_error(
                    f"{where}: blank text; send at least one non-space character", "blank", where
                )

    async def count_tokens(self, fields: Sequence[Located], add_special_tokens: bool = True) -> list[int]:
        """Token count of each text, after refusing blank, unreadable and over-long ones with a 422.

        Tokenising runs on the tokenizer threads, never the event loop: a megabyte of text takes the
        tokenizer a while, and ``/health`` must keep answering meanwhile.
        """
        self.refuse_blank(fields)
        texts = [text for _, text in fields]
        loop = asyncio.get_running_loop()
        try:
            counts = await loop.run_in_executor(
                self.runtime.tokenize, self.predictor.count_tokens, texts, add_special_tokens
            )
        except UnreadableText as exc:
            where = fields[exc.index][0]
            raise self.limit_error(
                f"{where}: the tokenizer cannot read this text ({exc.reason}; e.g. a lone surrogate such as "
                "\\ud800); send valid Unicode text",
                "unreadable",
                where,
            ) from None
        limit = self.settings.max_input_tokens
        for (where, _), n in zip(fields, counts, strict=True):
            if n > limit:
                raise self.limit_error(
                    f"{where}: {n} tokens; at most max_input_tokens={limit}", "input_tokens", where
                )
        return counts

    async def check_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """422 naming the first input the task cannot take, checked on the tokenizer threads."""
        loop = asyncio.get_running_loop()
        refused = await loop.run_in_executor(self.runtime.tokenize, self.predictor.refusals, records)
        if refused:
            i, why = refused[0]
            raise self.limit_error(f"inputs[{i}]: {why}", "unusable_input", f"inputs[{i}]")

    def log(self, request: Request, texts: Sequence[str]) -> None:
        """Masked inputs to the log, only when the operator turned ``log_inputs`` on."""
        if self.settings.log_inputs:
            log_inputs(request.state.request_id, texts)

    def enqueue(self, name: str, items: Sequence[Any]) -> list[asyncio.Future[Any]]:
        """Queue items now (429 / 503 at once when that is impossible); results come via the futures."""
        try:
            return self.runtime.batchers[name].enqueue(items)
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise HTTPException(
                429,
                "server busy: the request queue is full; retry after the Retry-After delay",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            ) from None
        except Closed:
            raise HTTPException(503, "server is shutting down; retry on another instance") from None

    def deadline(self) -> float:
        """The monotonic time by which a request that starts now must be answered."""
        return time.monotonic() + self.settings.request_timeout_s

    async def run(self, name: str, items: Sequence[Any], deadline: float | None = None) -> list[Any]:
        """Queue items and await their results by ``deadline`` (default: the timeout from now; 504 beyond).

        A request that queues several times (decode, then the safety gate) passes one deadline to
        each, so it is answered within ``request_timeout_s`` in all, not per stage.
        """
        futures = self.enqueue(name, items)
        timeout = max((deadline or self.deadline()) - time.monotonic(), 0.0)
        try:
            return await self.runtime.batchers[name].wait(futures, timeout)
        except asyncio.TimeoutError:
            self.metrics.rejected.labels("timeout").inc()
            raise HTTPException(
                504, f"no result within request_timeout_s={self.settings.request_timeout_s}s"
            ) from None


def record_fields(records: Sequence[Mapping[str, Any]]) -> list[Located]:
    """The texts of raw input records, each named as a 422 would: ``inputs[i]`` or ``inputs[i].<field>``.

    A pre-split field (a list of words) counts as its words joined by spaces, and none may be blank.
    Binary fields (an image task's encoded image files) hold no text: the request model validated them.
    """
    out = []
    for i, record in enumerate(records):
        for name, value in record.items():
            if isinstance(value, bytes):
                continue
            where = f"inputs[{i}]" if name == "text" else f"inputs[{i}].{name}"
            if isinstance(value, list):
                out += [(f"{where}[{j}]", str(word)) for j, word in enumerate(value) if not str(word).strip()]
                value = " ".join(map(str, value))
            out.append((where, str(value)))
    return out


def _as_list(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else inputs


def _encode(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def add_routes(app: FastAPI, ctx: Context) -> None:
    """Probes, metrics and model list, plus ``/v1/predict`` and ``/v1/embeddings`` when the model can."""
    predictor = ctx.predictor

    @app.get("/health", response_model=Status, openapi_extra={"security": []})
    async def health() -> Status:
        """Liveness: the process answers (no key needed, for load balancers)."""
        return Status(status="ok")

    @app.get("/ready", response_model=Status, responses=errors(401, 503))
    async def ready() -> Status:
        """Readiness: the model is loaded and the batchers run (503 while starting or draining)."""
        if not ctx.runtime.ready:
            raise HTTPException(503, "not ready: starting up or draining")
        return Status(status="ready")

    @app.get("/metrics", response_class=PlainTextResponse, responses=errors(401))
    async def metrics() -> Response:
        """Prometheus text exposition format."""
        ctx.publish_load()
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)

    @app.get("/v1/models", response_model=ModelList, responses=errors(401))
    async def models() -> ModelList:
        """The model this process serves (OpenAI-compatible)."""
        return ModelList(data=[ModelCard(id=predictor.model_id, created=ctx.runtime.started)])

    schema = predictor.schema
    if schema is not None:

        async def predict(body: Any, request: Request) -> Any:
            """Task predictions for one input or a list (Hugging Face inference style)."""
            ctx.check_model(getattr(body, "model", None))
            records = schema.records(body)
            ctx.check_batch(len(records), "inputs")
            explain = predictor.explains and body.explain
            if explain:
                ctx.check_explain(len(records), body.explain_method)
            fields = record_fields(records)
            ctx.metrics.tokens.labels("input").inc(sum(await ctx.count_tokens(fields)))
            await ctx.check_records(records)
            ctx.log(request, [text for _, text in fields])
            if explain:
                items = [(record, body.explain_method) for record in records]
                return schema.build(predictor.model_id, await ctx.run("explain", items))
            return schema.build(predictor.model_id, await ctx.run("predict", records))

        # The body model depends on the served task; FastAPI reads it from the annotation.
        predict.__annotations__["body"] = schema.request
        app.post("/v1/predict", response_model=schema.response, responses=MODEL_ROUTE_ERRORS)(predict)

    if predictor.encoder is not None:

        @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=MODEL_ROUTE_ERRORS)
        async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
            """Mean-pooled, L2-normalised encoder embeddings (OpenAI-compatible)."""
            ctx.check_model(body.model)
            texts = _as_list(body.input)
            where = "input" if isinstance(body.input, str) else "input[{}]"
            ctx.check_batch(len(texts), "input")
            counts = await ctx.count_tokens([(where.format(i), t) for i, t in enumerate(texts)])
            ctx.metrics.tokens.labels("input").inc(sum(counts))
            ctx.log(request, texts)
            vectors = await ctx.run("embed", texts)
            return EmbeddingResponse(
                data=[
                    Embedding(index=i, embedding=_encode(v, body.encoding_format))
                    for i, v in enumerate(vectors)
                ],
                model=predictor.model_id,
                usage=Usage(prompt_tokens=sum(counts), total_tokens=sum(counts)),
            )
