"""API-key authentication and the request body limit, as pure ASGI middleware.

Middleware rather than route dependencies so nothing can be left unprotected by accident: it covers
every path the app answers (``/metrics``, unknown paths) except ``OPEN_PATHS``: ``/health``, which
load balancers probe without credentials, and the API documentation (Swagger UI at ``/docs``, ReDoc,
``/openapi.json``), which describes the routes and holds no data, as FastAPI serves it by default.
Swagger UI's "Authorize" sends the key on "Try it out" (``SECURITY_SCHEMES``). Keys are kept only as
SHA-256 digests and every stored digest is compared with ``hmac.compare_digest``, so neither the
comparison nor the number of keys tried leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunelab.serving.schemas import error_response

OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# The two ways a key is accepted, as OpenAPI security schemes (what /docs "Authorize" offers).
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def hash_key(key: str) -> bytes:
    """SHA-256 digest of a key (keys are random tokens, so a plain hash suffices; no password KDF)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]  # ASGI: (lower-cased name, value) pairs
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def presented_keys(scope: Scope) -> list[str]:
    """Keys the client sent: ``Authorization: Bearer <key>`` and/or ``X-API-Key: <key>``."""
    keys = []
    auth = _header(scope, b"authorization")
    if auth is not None and auth[:7].lower() == "bearer ":
        keys.append(auth[7:].strip())
    api_key = _header(scope, b"x-api-key")
    if api_key is not None:
        keys.append(api_key.strip())
    return keys


class ApiKeyMiddleware:
    """401 unless a presented key's digest equals a stored one; disabled when no key is configured."""

    def __init__(self, app: ASGIApp, key_digests: Iterable[bytes]) -> None:
        self.app = app
        self.digests = list(key_digests)

    def accepts(self, key: str) -> bool:
        """Compare against every stored digest (no early exit)."""
        digest = hash_key(key)
        ok = False
        for stored in self.digests:
            ok |= hmac.compare_digest(digest, stored)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: pass authorised and open requests on, answer the rest with a 401 ``ErrorBody``.

        Non-HTTP scopes, ``OPEN_PATHS`` and a server without keys pass unchecked. The 401 says whether
        a key was missing or wrong and carries ``WWW-Authenticate: Bearer``.
        """
        if scope["type"] != "http" or not self.digests or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        results = [self.accepts(key) for key in presented_keys(scope)]
        if any(results):
            await self.app(scope, receive, send)
            return
        message = "invalid API key" if results else "missing API key: send Authorization: Bearer <key>"
        response = error_response(
            401, message, scope.get("state", {}).get("request_id"), {"WWW-Authenticate": "Bearer"}
        )
        await response(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-stream; an HTTPException so FastAPI's body parsing re-raises it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over ``limit`` bytes: by Content-Length up front, else counted while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: refuse an oversized body with a 413 ``ErrorBody`` before the app reads past it.

        A declared Content-Length over the limit is refused without reading; otherwise ``receive`` is
        wrapped to count bytes and raise ``BodyTooLarge`` once the limit is crossed.
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error_response(413, str(BodyTooLarge(self.limit).detail), request_id)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await error_response(413, str(exc.detail), request_id)(scope, receive, send)
