"""``tunelab ui``: the console's FastAPI app, its JSON API under ``/api`` and the static page at ``/``.

The page (HTML, JS, CSS, vendored uPlot) holds no data and is served openly; every ``/api`` route sits
behind serving's ``ApiKeyMiddleware`` when a key is set, and a key is required to bind beyond loopback
(the page can start training processes and reach other servers through the playground).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from tunelab.console import runs
from tunelab.console.jobs import Jobs, check_start, example_names, example_path, field_errors
from tunelab.errors import ConfigError, ServingError
from tunelab.serving.security import ApiKeyMiddleware, hash_key
from tunelab.serving.settings import is_loopback

STATIC = Path(__file__).parent / "static"
POLL_S = 0.5  # how often the metrics stream looks for new records of a run that is training
PLAYGROUND_PATHS = ("/health", "/v1/predict", "/v1/completions", "/v1/chat/completions", "/v1/embeddings")


class StartRequest(BaseModel):
    """A run to start: an example config, its new name and the fields edited on the page."""

    model_config = ConfigDict(extra="forbid")
    example: str = Field(description="An example config as /api/examples lists it.")
    name: str = Field(description="Run name: its output dir is <runs root>/<name>.")
    fields: dict[str, str] = Field(default_factory=dict, description="Overrides: key path -> value.")


class PlaygroundRequest(BaseModel):
    """One call to a served model, made by the console (the model server sends no CORS headers)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="Base URL of a `tunelab serve` server, e.g. http://127.0.0.1:8000.")
    api_key: str = Field(default="", description="That server's API key; forwarded, never stored or logged.")
    path: str = Field(description=f"One of {', '.join(PLAYGROUND_PATHS)}.")
    payload: dict[str, Any] | None = Field(default=None, description="JSON body (None: a GET).")


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to bind beyond loopback without a key: the page starts processes on this machine."""
    if not is_loopback(host) and not api_key:
        raise ServingError(
            f"refusing to serve the console on {host} without an API key: anyone who can reach the port "
            "could start training and read every run. Set TUNELAB_UI_API_KEY or bind 127.0.0.1"
        )


def _call_model(req: PlaygroundRequest) -> tuple[int, Any]:
    """Forward the request; the answer's status and JSON (or text). Neither key nor body is logged."""
    if not req.url.startswith(("http://", "https://")) or req.path not in PLAYGROUND_PATHS:
        raise ConfigError(f"playground: an http(s) url and one of {', '.join(PLAYGROUND_PATHS)}")
    data = None if req.payload is None else json.dumps(req.payload).encode()
    call = urllib.request.Request(
        req.url.rstrip("/") + req.path, data=data, method="GET" if data is None else "POST"
    )
    call.add_header("Content-Type", "application/json")
    if req.api_key:
        call.add_header("Authorization", f"Bearer {req.api_key}")
    try:
        with urllib.request.urlopen(call, timeout=120) as resp:  # the scheme is checked above: no file://
            status, text = resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, TimeoutError) as exc:
        raise ServingError(f"playground: cannot reach {req.url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def _api(root: Path, examples: Path, jobs: Jobs) -> FastAPI:
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(runs.RunNotFound)
    async def not_found(_: Request, exc: runs.RunNotFound) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @api.exception_handler(ConfigError)
    async def invalid(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"error": "invalid config", "fields": field_errors(exc)}, status_code=422)

    @api.exception_handler(ServingError)
    async def unreachable(_: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=502)

    @api.get("/runs")
    def list_runs(
        task: str | None = None, method: str | None = None, sort: str | None = None, desc: bool = True
    ) -> list[dict[str, Any]]:
        """Every run's summary; filtered by task / method, sorted by a metric (runs without it last)."""
        rows = [runs.summary(root, name, jobs.running(name)) for name in runs.find_runs(root)]
        rows = [
            r
            for r in rows
            if (task is None or r["task"] == task) and (method is None or method in r["methods"])
        ]
        if sort:
            with_metric = sorted((r for r in rows if sort in r["metrics"]), key=lambda r: r["metrics"][sort])
            rows = (with_metric[::-1] if desc else with_metric) + [
                r for r in rows if sort not in r["metrics"]
            ]
        return rows

    @api.get("/runs/{name:path}/events")
    async def events(name: str) -> StreamingResponse:
        """Server-sent events: the run's records as they are written, then ``end`` once it stopped.

        Followed while the console's job for it runs, or while ``train`` started elsewhere still logs.
        """
        path = runs.run_path(root, name)

        async def stream() -> AsyncIterator[str]:
            offset = 0
            while True:
                # read before the file: a record written after it is read before the stream ends
                running = jobs.running(name) or runs.training_elsewhere(path)
                records, offset = runs.read_records(path, offset)
                if records:
                    yield f"data: {json.dumps(records)}\n\n"
                if not running:
                    yield f"event: end\ndata: {json.dumps(runs.summary(root, name, False)['status'])}\n\n"
                    return
                await asyncio.sleep(POLL_S)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @api.get("/runs/{name:path}")
    def run(name: str) -> dict[str, Any]:
        """One run: summary, config, final reports, MoE expert load per layer and the start job's log.

        A run started here is ``starting`` (or ``failed``) with its log until ``train`` writes its config.
        """
        job = jobs.jobs.get(name)
        try:
            path = runs.run_path(root, name)
        except runs.RunNotFound:
            if job is None:
                raise
            return {
                "name": name,
                "status": "starting" if jobs.running(name) else "failed",
                "job": job.state(),
            }
        best = runs.best_metrics(path)
        return {
            **runs.summary(root, name, jobs.running(name)),
            "config": runs.read_config(path),
            "reports": {k: v for k, v in best.items() if k in ("dev", "test")},
            "expert_load": runs.routing_load(best),
            "job": job.state() if job else None,
        }

    @api.get("/compare")
    def compare(names: list[str] = Query(alias="run", min_length=2, max_length=4)) -> dict[str, Any]:
        """2-4 runs side by side: their summaries, the config keys that differ, and every curve."""
        paths = [runs.run_path(root, n) for n in names]
        return {
            "runs": [runs.summary(root, n, jobs.running(n)) for n in names],
            "config_diff": runs.config_diff([runs.read_config(p) for p in paths]),
            "histories": {n: runs.read_records(p)[0] for n, p in zip(names, paths, strict=True)},
        }

    @api.get("/examples")
    def list_examples() -> list[str]:
        """The example configs a run can start from."""
        return example_names(examples)

    @api.get("/examples/{example:path}")
    def show_example(example: str) -> dict[str, str]:
        """An example config's text, as the form shows it before fields are edited."""
        return {"name": example, "text": example_path(examples, example).read_text(encoding="utf-8")}

    @api.post("/start", status_code=202)
    def start(req: StartRequest) -> dict[str, Any]:
        """Validate (422 with the problems by field) and start ``tunelab train`` on the result."""
        args = check_start(examples, root, req.example, req.name, req.fields, jobs.jobs)
        jobs.start(req.name, args)
        return {"name": req.name}

    @api.post("/playground")
    def playground(req: PlaygroundRequest) -> dict[str, Any]:
        """Query a served model through the console; answers its status and body."""
        status, body = _call_model(req)
        return {"status": status, "body": body}

    return api


def create_app(
    root: Path,
    examples: Path,
    api_key: str | None = None,
) -> FastAPI:
    """The console for the runs below ``root``; runs start from ``examples``.

    Relative paths (``root``, and those in the configs) mean the same to the console, which validates
    a start, and to the ``train`` it starts: both resolve them against the current directory.
    """
    jobs = Jobs()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.stop_all()

    app = FastAPI(title="tunelab console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    api: Callable[..., Awaitable[None]] = _api(root, examples, jobs)
    if api_key:
        api = ApiKeyMiddleware(api, [hash_key(api_key)])
    app.mount("/api", api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/static/index.html")

    return app


def run(app: FastAPI, host: str, port: int) -> None:
    """Serve until Ctrl-C; runs the console started are stopped on the way out (the lifespan)."""
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)  # no request lines, no keys
