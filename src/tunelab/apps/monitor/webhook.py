"""Alert delivery to a webhook: a JSON POST with a timeout and retries that never stops the stream.

urllib (stdlib) rather than httpx: the webhook is one small POST per alert, and the library layers
below ``serving`` do not depend on an HTTP client.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from tunelab.apps.monitor.settings import WebhookSettings

logger = logging.getLogger(__name__)


def shown_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what a log line may show of it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def post_alert(alert: dict[str, Any], settings: WebhookSettings) -> bool:
    """POST ``alert`` as JSON; True when a 2xx answer came within ``1 + retries`` attempts.

    A failure is logged (URL without credentials or query, never the body) and returned, not raised:
    an unreachable webhook must not stop the monitor.
    """
    if settings.url is None:
        return True
    url = str(settings.url)
    body = json.dumps(alert).encode()
    error = ""
    for attempt in range(settings.retries + 1):
        if attempt:
            time.sleep(settings.backoff_seconds * 2 ** (attempt - 1))
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_seconds) as response:  # noqa: S310
                response.read()
            return True
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = type(getattr(exc, "reason", exc)).__name__
    logger.error(
        "webhook %s failed after %d attempts (%s); the alert is still in the output",
        shown_url(url),
        settings.retries + 1,
        error,
    )
    return False
