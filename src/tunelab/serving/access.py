"""Request ids, one JSON access-log line per request, request metrics, and the last-resort 500.

The access line holds method, path, status, latency and request id; never the body, the query string
or headers (keys travel in headers). Inputs are logged only when ``log_inputs`` is on, and then with
e-mail addresses, phone numbers and long digit runs masked. An exception that escapes a route is
logged by type and request id only (its message may quote the input) and answered with ``ErrorBody``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Collection, Sequence
from contextlib import nullcontext

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunelab.serving.metrics import ServeMetrics
from tunelab.serving.schemas import error_response

access_logger = logging.getLogger("tunelab.serving.access")
logger = logging.getLogger(__name__)

_MODEL_ROUTES = "/v1/"  # requests counted in flight; probes and scrapes are not load
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d ().-]{6,}\d")
_DIGITS = re.compile(r"\d{6,}")


def mask_pii(text: str) -> str:
    """Replace e-mail addresses, phone-number-like and 6+ digit runs (ids, card numbers) with tags."""
    text = _EMAIL.sub("<email>", text)
    text = _PHONE.sub("<phone>", text)
    return _DIGITS.sub("<number>", text)


def log_inputs(request_id: str | None, texts: Sequence[str]) -> None:
    """One JSON line with the masked inputs of a request (only called when ``log_inputs`` is on)."""
    access_logger.info(json.dumps({"request_id": request_id, "inputs": [mask_pii(t) for t in texts]}))


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when it is a short safe token (it lands in logs), else a new uuid."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]  # ASGI: (lower-cased name, value) pairs
    for key, value in headers:
        if key == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


class AccessLogMiddleware:
    """Outermost app middleware: assigns the request id, measures, logs, counts, catches the rest."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # known paths; anything else is counted as "unmatched" (bounded labels)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: run the request with an id, then log and count it whatever happened.

        The id goes into ``scope["state"]`` (error bodies echo it) and the ``X-Request-ID`` response
        header. An exception escaping the app is logged by type only and answered with a 500
        ``ErrorBody`` if no response has started; the access line never holds the request body.
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        counted = scope["path"].startswith(_MODEL_ROUTES)
        try:
            with self.metrics.in_flight.track_inprogress() if counted else nullcontext():
                await self.app(scope, receive, send_with_id)
        except Exception as exc:  # serving boundary: never crash the worker, never log the input
            logger.error(json.dumps({"request_id": request_id, "error": type(exc).__name__}))
            if not started:
                await error_response(500, "internal error; see the server log", request_id)(
                    scope, receive, send_with_id
                )
        finally:
            latency = time.perf_counter() - start
            route = scope["path"] if scope["path"] in self.routes else "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(latency)
            access_logger.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "latency_ms": round(latency * 1000, 2),
                    }
                )
            )
