"""The FastAPI app: ``create_app(settings, predictor)`` wires routes, middleware, errors and the lifespan.

No module-level app or settings: tests build as many apps as they like, and scale-out runs N
processes each calling :func:`app_from_env` (``uvicorn --factory``). The lifespan starts the batchers
(one worker thread runs the model) and, on shutdown, drains what is queued before the process exits.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from tunelab import __version__
from tunelab.config import format_loc
from tunelab.serving.access import AccessLogMiddleware
from tunelab.serving.batcher import Batcher
from tunelab.serving.generation import add_generation_routes
from tunelab.serving.metrics import ServeMetrics
from tunelab.serving.predictor import EncoderPredictor, Predictor, load_predictor
from tunelab.serving.routes import Context, Runtime, add_routes
from tunelab.serving.schemas import error_response
from tunelab.serving.security import ApiKeyMiddleware, BodyLimitMiddleware, hash_key
from tunelab.serving.settings import ServeSettings, check_exposure, load_api_keys, load_settings

logger = logging.getLogger(__name__)


def _model_calls(predictor: Predictor) -> dict[str, tuple[Any, int | None]]:
    """Batcher name -> (batch function, batch size cap or None for the setting)."""
    if isinstance(predictor, EncoderPredictor):
        calls: dict[str, tuple[Any, int | None]] = {
            "embed": (lambda texts: list(predictor.embed(texts)), None)
        }
        if predictor.schema is not None:
            calls["predict"] = (predictor.predict, None)
        return calls
    return {"generate": (lambda jobs: [predictor.generate(job) for job in jobs], 1)}


def _lifespan(ctx: Context) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-model")
        for name, (fn, cap) in _model_calls(ctx.predictor).items():
            batcher: Batcher[Any, Any] = Batcher(
                fn,
                executor,
                max_batch_size=cap or ctx.settings.max_batch_size,
                max_wait_ms=ctx.settings.max_wait_ms,
                max_queue_size=ctx.settings.max_queue_size,
                on_batch=ctx.metrics.batch_size.labels(name).observe,
                on_depth=ctx.metrics.queue_depth.labels(name).set,
            )
            batcher.start()
            ctx.runtime.batchers[name] = batcher
        ctx.runtime.ready = True
        try:
            yield
        finally:
            ctx.runtime.ready = False
            for batcher in ctx.runtime.batchers.values():
                await batcher.stop()  # uvicorn has let in-flight requests finish; run what is still queued
            ctx.runtime.batchers.clear()
            executor.shutdown(wait=True)

    return lifespan


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), request.state.request_id, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 listing every problem as ``key.path: message`` (the body itself is never echoed)."""
    assert isinstance(exc, RequestValidationError)
    problems = [f"{format_loc(tuple(e['loc'][1:])) or 'body'}: {e['msg']}" for e in exc.errors()]
    return error_response(422, "; ".join(problems), request.state.request_id)


def create_app(settings: ServeSettings, predictor: Predictor) -> FastAPI:
    """Build the app for one predictor; API keys come from ``settings`` and are kept only hashed."""
    metrics = ServeMetrics()
    ctx = Context(settings, predictor, metrics, Runtime())
    app = FastAPI(title="tunelab", version=__version__, lifespan=_lifespan(ctx))
    add_routes(app, ctx)
    if not isinstance(predictor, EncoderPredictor):
        add_generation_routes(app, ctx)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Added innermost first: access log (outermost) -> API key -> body limit -> routes.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, key_digests=[hash_key(k) for k in load_api_keys(settings)])
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
    return create_app(settings, load_predictor(settings.model_dir))


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
