"""Prometheus metrics on a per-app ``CollectorRegistry`` (two apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SPEED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class ServeMetrics:
    """The server's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tunelab_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tunelab_request_latency_seconds",
            "Time from request start to response end.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "tunelab_batch_size",
            "Inputs per model call.",
            ["queue"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tunelab_queue_depth", "Inputs waiting for the model.", ["queue"], registry=self.registry
        )
        self.tokens = Counter(
            "tunelab_tokens",
            "Tokens processed: input (prompt) and generated.",
            ["kind"],
            registry=self.registry,
        )
        self.tokens_per_s = Histogram(
            "tunelab_generation_tokens_per_second",
            "Generated tokens per second of decoding, one observation per generation request.",
            buckets=_SPEED_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "tunelab_rejected", "Requests turned away by a limit.", ["reason"], registry=self.registry
        )

    def render(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return generate_latest(self.registry)
