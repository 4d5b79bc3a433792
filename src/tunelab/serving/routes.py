"""Routes: validate -> check limits -> batcher -> response. No model code here."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException

from tunelab.serving.access import log_inputs
from tunelab.serving.batcher import Batcher, Closed, QueueFull
from tunelab.serving.metrics import ServeMetrics
from tunelab.serving.predictor import EncoderPredictor, Predictor
from tunelab.serving.schemas import (
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

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 413, 422, 429, 500, 503, 504)
}


@dataclass
class Runtime:
    """What the lifespan creates and the routes use: the batchers and the readiness flag."""

    batchers: dict[str, Batcher[Any, Any]] = field(default_factory=dict)
    ready: bool = False
    started: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Context:
    """Everything a route handler needs, built once per app."""

    settings: ServeSettings
    predictor: Predictor
    metrics: ServeMetrics
    runtime: Runtime

    def limit_error(self, message: str, reason: str) -> HTTPException:
        """A 422 for a request over a configured limit, counted by reason."""
        self.metrics.rejected.labels(reason).inc()
        return HTTPException(422, message)

    def check_texts(self, texts: Sequence[str], field_name: str) -> list[int]:
        """Enforce max_batch_items and max_input_tokens; return the token count of each text."""
        limit = self.settings.max_batch_items
        if len(texts) > limit:
            raise self.limit_error(
                f"{field_name}: {len(texts)} items; at most max_batch_items={limit} per request",
                "batch_items",
            )
        counts = self.predictor.count_tokens(texts)
        self.check_tokens(counts, field_name)
        self.metrics.tokens.labels("input").inc(sum(counts))
        return counts

    def check_tokens(self, counts: Sequence[int], field_name: str) -> None:
        """422 naming the first input over max_input_tokens."""
        limit = self.settings.max_input_tokens
        for i, n in enumerate(counts):
            if n > limit:
                where = f"{field_name}[{i}]" if len(counts) > 1 else field_name
                raise self.limit_error(
                    f"{where}: {n} tokens; at most max_input_tokens={limit}", "input_tokens"
                )

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

    async def run(self, name: str, items: Sequence[Any]) -> list[Any]:
        """Queue items and await their results within the per-request timeout (504 beyond it)."""
        futures = self.enqueue(name, items)
        try:
            return await self.runtime.batchers[name].wait(futures, self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.rejected.labels("timeout").inc()
            raise HTTPException(
                504, f"no result within request_timeout_s={self.settings.request_timeout_s}s"
            ) from None


def _as_list(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else inputs


def _encode(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def add_routes(app: FastAPI, ctx: Context) -> None:
    """The routes this predictor supports (an encoder without a head has no /v1/predict, etc.)."""
    predictor = ctx.predictor

    @app.get("/health", response_model=Status)
    async def health() -> Status:
        """Liveness: the process answers (no key needed, for load balancers)."""
        return Status(status="ok")

    @app.get("/ready", response_model=Status, responses=ERRORS)
    async def ready() -> Status:
        """Readiness: the model is loaded and the batchers run (503 while starting or draining)."""
        if not ctx.runtime.ready:
            raise HTTPException(503, "not ready: starting up or draining")
        return Status(status="ready")

    @app.get("/metrics", responses=ERRORS)
    async def metrics() -> Response:
        """Prometheus text format."""
        for name, batcher in ctx.runtime.batchers.items():
            ctx.metrics.queue_depth.labels(name).set(batcher.depth)
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS)
    async def models() -> ModelList:
        """The one model this process serves (OpenAI-compatible)."""
        return ModelList(data=[ModelCard(id=predictor.model_id, created=ctx.runtime.started)])

    if isinstance(predictor, EncoderPredictor):
        schema = predictor.schema
        if schema is not None:

            async def predict(body: Any, request: Request) -> Any:
                """Task predictions for one input or a list (Hugging Face inference style)."""
                records = schema.records(body)
                texts = [" ".join(str(v) for v in record.values()) for record in records]
                ctx.check_texts(texts, "inputs")
                ctx.log(request, texts)
                return schema.build(predictor.model_id, await ctx.run("predict", records))

            # The body model depends on the served task; FastAPI reads it from the annotation.
            predict.__annotations__["body"] = schema.request
            app.post("/v1/predict", response_model=schema.response, responses=ERRORS)(predict)

        @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERRORS)
        async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
            """Mean-pooled, L2-normalised encoder embeddings (OpenAI-compatible)."""
            texts = _as_list(body.input)
            counts = ctx.check_texts(texts, "input")
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
