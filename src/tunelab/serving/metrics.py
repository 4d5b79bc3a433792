"""Prometheus metrics on a per-app ``CollectorRegistry`` (two apps in one process never share counters).

Under ``tunelab serve --workers N`` the parent sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers
start, so prometheus_client keeps every value in a per-process file there and ``render`` answers for
the whole server, whichever worker the scrape reaches: counters and histograms add up, and each gauge
says how its workers combine (``multiprocess_mode``; ``live*`` leaves out exited workers).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch, read when it is imported

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SPEED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class ServeMetrics:
    """The server's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = _MULTIPROC_DIR in os.environ
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
            "tunelab_queue_depth",
            "Inputs waiting for the model.",
            ["queue"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "tunelab_requests_in_flight",
            "Requests to /v1/ routes being handled (accepted, not yet answered).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.saturation = Gauge(
            "tunelab_saturation",
            "(inputs in the model + inputs queued) / (model slots + max_queue_size) of the fullest queue; "
            "1 = the next input gets 429. Several workers: the busiest one's.",
            registry=self.registry,
            multiprocess_mode="livemax",
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
        self.safety_checked = Counter(
            "tunelab_safety_checked",
            "Generated replies the safety gate judged.",
            registry=self.registry,
        )
        self.safety_blocked = Counter(
            "tunelab_safety_blocked",
            "Generated replies the safety gate replaced by its refusal, by the label that blocked them.",
            ["label"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format for ``/metrics``: this app's, or every worker's combined."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return generate_latest(combined)

    def close(self) -> None:
        """Drop this worker's live gauges from the combined view (its counters keep counting)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
