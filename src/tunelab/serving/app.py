"""The FastAPI app: ``create_app(settings, predictor)`` wires routes, middleware, errors and the lifespan.

No module-level app or settings: tests build as many apps as they like, and scale-out runs N
processes each calling :func:`app_from_env` (``uvicorn --factory``). The lifespan starts the batchers
(one worker thread runs the model) and, on shutdown, drains what is queued before the process exits.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from tunelab import __version__
from tunelab.errors import format_loc
from tunelab.models.run_info import cpu_has_native_bf16, cpu_info
from tunelab.serving.access import AccessLogMiddleware
from tunelab.serving.assistant import add_assistant_route
from tunelab.serving.batcher import Batcher, ModelQueue
from tunelab.serving.decode_loop import DecodeLoop
from tunelab.serving.generation import add_generation_routes
from tunelab.serving.metrics import ServeMetrics
from tunelab.serving.predictor import Predictor, load_predictor
from tunelab.serving.routes import Context, Runtime, add_routes
from tunelab.serving.schemas import ApiError, error_response
from tunelab.serving.security import SECURITY_SCHEMES, ApiKeyMiddleware, BodyLimitMiddleware, hash_key
from tunelab.serving.settings import ServeSettings, check_exposure, load_api_keys, load_settings

logger = logging.getLogger(__name__)


def _model_queues(ctx: Context, executor: Executor) -> dict[str, ModelQueue[Any, Any]]:
    """Queue name -> the queue feeding the model thread, by the predictor's capabilities.

    Requests batch per call (``max_batch_size``); a causal LM's generation jobs decode continuously
    batched (``decode_batch_size`` rows), other generating models one job at a time.
    """
    predictor, settings = ctx.predictor, ctx.settings

    def metered(name: str) -> dict[str, Any]:
        return {
            "max_queue_size": settings.max_queue_size,
            "on_batch": ctx.metrics.batch_size.labels(name).observe,
            "on_change": ctx.publish_load,
        }

    def batcher(name: str, fn: Any, size: int) -> Batcher[Any, Any]:
        return Batcher(fn, executor, max_batch_size=size, max_wait_ms=settings.max_wait_ms, **metered(name))

    queues: dict[str, ModelQueue[Any, Any]] = {}
    if predictor.schema is not None:
        queues["predict"] = batcher("predict", predictor.predict, settings.max_batch_size)
    if predictor.explains:
        explain = functools.partial(predictor.explain, steps=settings.explain_steps)
        queues["explain"] = batcher("explain", explain, settings.max_explain_items)
    if predictor.assistant is not None:
        queues["assist"] = batcher("assist", predictor.assist, settings.max_batch_size)
    if predictor.gate is not None:
        queues["safety"] = batcher("safety", predictor.judge, settings.max_batch_size)
    if predictor.encoder is not None:
        queues["embed"] = batcher(
            "embed", lambda texts: list(predictor.embed(texts)), settings.max_batch_size
        )
    if predictor.generates:
        decoder = predictor.continuous_decoder(settings.decode_batch_size)
        queues["generate"] = (
            batcher("generate", lambda jobs: [predictor.generate(job) for job in jobs], 1)
            if decoder is None
            else DecodeLoop(decoder, predictor.precision, executor, **metered("generate"))
        )
    return queues


def _lifespan(ctx: Context) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-model")
        # Token counting gets threads of its own: a long input never waits behind the model or
        # blocks the event loop, and two threads bound the CPU it can take from the model.
        tokenize = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tunelab-tokenize")
        ctx.runtime.tokenize = tokenize
        for name, queue in _model_queues(ctx, executor).items():
            queue.start()
            ctx.runtime.batchers[name] = queue
        # The model, tokenizer and libraries are many long-lived objects: frozen out of the
        # collector, a full collection (triggered by e.g. the token lists of a 1 MB input) no longer
        # scans them while holding the GIL, which stalled /health for ~0.5 s in the hardening test.
        gc.collect()  # garbage is not frozen
        gc.freeze()
        ctx.runtime.ready = True
        try:
            yield
        finally:
            ctx.runtime.ready = False
            gc.unfreeze()  # several apps in one process (tests) leave nothing frozen behind
            for batcher in ctx.runtime.batchers.values():
                await batcher.stop()  # uvicorn has let in-flight requests finish; run what is still queued
            ctx.runtime.batchers.clear()
            executor.shutdown(wait=True)
            tokenize.shutdown(wait=True)
            ctx.metrics.close()

    return lifespan


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    param, code = (exc.param, exc.code) if isinstance(exc, ApiError) else (None, None)
    return error_response(
        exc.status_code, str(exc.detail), request.state.request_id, exc.headers, param, code
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 listing every problem as ``key.path: message`` (the body itself is never echoed)."""
    assert isinstance(exc, RequestValidationError)
    locs = [format_loc(tuple(e["loc"][1:])) or "body" for e in exc.errors()]
    problems = [f"{loc}: {e['msg']}" for loc, e in zip(locs, exc.errors(), strict=True)]
    return error_response(422, "; ".join(problems), request.state.request_id, param=locs[0])


def _document_keys(app: FastAPI) -> None:
    """Declare the API-key schemes in the OpenAPI schema, so ``/docs`` offers "Authorize".

    The middleware enforces the keys; this only tells clients and Swagger UI how to send them.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI caches it in app.openapi_schema; completed here once
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def create_app(settings: ServeSettings, predictor: Predictor) -> FastAPI:
    """Build the app for one predictor; API keys come from ``settings`` and are kept only hashed.

    Routes follow the predictor's capabilities: ``/v1/predict`` when its task declares a schema,
    ``/v1/embeddings`` for an encoder, the completions routes when it generates, and for an
    assistant app only its ``/v1/chat/completions`` (its generator is not exposed on its own).
    """
    metrics = ServeMetrics()
    ctx = Context(settings, predictor, metrics, Runtime())
    app = FastAPI(title="tunelab", version=__version__, lifespan=_lifespan(ctx))
    add_routes(app, ctx)
    if predictor.assistant is not None:
        add_assistant_route(app, ctx)
    elif predictor.generates:
        add_generation_routes(app, ctx)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    key_digests = [hash_key(k) for k in load_api_keys(settings)]
    if key_digests:
        _document_keys(app)
    # Added innermost first: access log (outermost) -> API key -> body limit -> routes.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, key_digests=key_digests)
    paths = {getattr(route, "path", "") for route in app.routes}
    app.add_middleware(AccessLogMiddleware, metrics=metrics, routes=paths)
    return app


def app_from_settings(settings: ServeSettings, bind_host: str | None) -> FastAPI:
    """Load the model named by ``settings.model_dir`` and build its app (torch threads set first).

    ``bind_host`` None means the caller binds elsewhere and the address is unknown: treated as exposed.
    """
    check_exposure(settings, len(load_api_keys(settings)), bind_host)
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    predictor = load_predictor(
        settings.model_dir,
        precision=settings.precision,
        sub_batch_size=settings.sub_batch_size,
        safety=settings.safety,
    )
    logger.info(
        "serving %s on %s in %s (precision %s; CPU %s, native bf16 %s)",
        predictor.model_id,
        predictor.device,
        "fp32" if predictor.autocast is None else f"{predictor.autocast} autocast",
        settings.precision,
        cpu_info()["cpu"],
        "yes" if cpu_has_native_bf16() else "no",
    )
    return create_app(settings, predictor)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory tunelab.serving.app:app_from_env`` (settings from TUNELAB_SERVE_*).

    uvicorn binds the socket itself, so the factory cannot see the address: it insists on an API key
    (or an explicit TUNELAB_SERVE_ALLOW_UNAUTHENTICATED) instead of trusting TUNELAB_SERVE_HOST.
    """
    from tunelab.assets import hub_offline

    hub_offline()  # a worker process starts here, not in the CLI
    return app_from_settings(load_settings(), bind_host=None)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run(app: FastAPI, settings: ServeSettings) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, let in-flight requests finish, drain, exit 0.

    uvicorn does the graceful part and afterwards re-raises the signal with the handler that was
    installed before it started; ours turns that into a normal exit instead of death by SIGTERM.
    """
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # AccessLogMiddleware writes the structured line
        server_header=False,
        timeout_graceful_shutdown=settings.drain_timeout_s,
    )
