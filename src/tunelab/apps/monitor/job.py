"""The monitor job: classify batches of texts by sentiment and topic, feed the alert rule, emit alerts.

Both runs are loaded once (``inference.artifact``) and every batch goes through the one batched
prediction path (``inference.predict.predict_records``). Alerts go to ``emit`` (a JSON line on stdout
or in a file), to the log and to the webhook; the job ends at the input's end or when ``stop`` is set
(SIGINT/SIGTERM in the CLI), after classifying what it had already read, and returns a summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tunelab.apps.monitor.rule import Jump, TopicWindow, observe
from tunelab.apps.monitor.settings import MonitorSettings
from tunelab.apps.monitor.stream import Record, batches, start_reader
from tunelab.apps.monitor.webhook import post_alert
from tunelab.apps.settings import classification_run
from tunelab.errors import ConfigError, DataError
from tunelab.inference.artifact import Artifact, load_artifact
from tunelab.inference.predict import predict_records

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classifiers:
    """The two loaded runs and the sentiment label that counts as negative."""

    sentiment: Artifact
    topic: Artifact
    negative_label: str


def load_classifiers(settings: MonitorSettings) -> Classifiers:
    """Load both runs once; the negative label must be one of the sentiment run's labels."""
    sentiment = classification_run(load_artifact(settings.sentiment_run), "sentiment_run")
    if settings.negative_label not in sentiment.labels:
        raise ConfigError(
            f"negative_label: {settings.negative_label!r} is not a label of {sentiment.path}; "
            f"choose one of {sentiment.labels}"
        )
    return Classifiers(
        sentiment, classification_run(load_artifact(settings.topic_run), "topic_run"), settings.negative_label
    )


def classify(models: Classifiers, texts: list[str], batch_size: int) -> list[tuple[str, bool]]:
    """(topic, negative) of each text, in order."""
    records = [{"text": text} for text in texts]
    sentiments = predict_records(models.sentiment, records, batch_size)
    topics = predict_records(models.topic, records, batch_size)
    return [
        (topic["label"], sentiment["label"] == models.negative_label)
        for sentiment, topic in zip(sentiments, topics, strict=True)
    ]


@dataclass
class Summary:
    """What a monitor run did: counts, wall seconds, throughput and why it stopped."""

    items: int = 0
    skipped: int = 0
    alerts: int = 0
    webhook_failures: int = 0
    seconds: float = 0.0
    stopped: str = "end of input"
    per_topic: dict[str, int] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        """Classified items per wall second."""
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary including the throughput."""
        return {**asdict(self), "items_per_second": round(self.items_per_second, 2)}


def alert_payload(
    topic: str, jump: Jump, record: Record, index: int, settings: MonitorSettings
) -> dict[str, Any]:
    """The alert as one JSON object: topic, both shares, the item that triggered it (no text)."""
    return {
        "alert": "negative_share_jump",
        "topic": topic,
        "baseline_share": round(jump.baseline_share, 4),
        "recent_share": round(jump.recent_share, 4),
        "jump": round(jump.jump, 4),
        "threshold": settings.window.threshold,
        "baseline_items": jump.baseline_items,
        "recent_items": jump.recent_items,
        "item": {"id": record.id, "time": record.time, "where": record.where, "index": index},
        "emitted_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def run_monitor(
    settings: MonitorSettings,
    models: Classifiers,
    lines: Iterator[tuple[str, str]],
    emit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
) -> Summary:
    """Monitor ``lines`` (``(file:line, text)`` pairs from ``stream.read_lines``) to their end or ``stop``.

    A bad line is skipped with a warning naming ``file:line``, or raised as ``DataError`` when
    ``settings.bad_lines`` is ``fail``. Each alert is emitted, logged and POSTed to the webhook in
    stream order; ``index`` in its payload is the 0-based position among the classified items.
    ``stop`` is set on return, which ends the reader thread.
    """
    summary, windows = Summary(), dict[str, TopicWindow]()
    start = time.perf_counter()
    queued = start_reader(lines, stop, size=4 * settings.batch_size)
    try:
        for batch in batches(queued, settings.batch_size, settings.max_wait_seconds, stop):
            records = _usable(batch, settings, summary)
            for record, (topic, negative) in zip(
                records, classify(models, [r.text for r in records], settings.batch_size), strict=True
            ):
                summary.per_topic[topic] = summary.per_topic.get(topic, 0) + 1
                jump = observe(
                    windows.setdefault(topic, TopicWindow()), negative, record.time, settings.window
                )
                summary.items += 1
                if jump is not None:
                    _alert(
                        alert_payload(topic, jump, record, summary.items - 1, settings),
                        emit,
                        settings,
                        summary,
                    )
    finally:
        summary.seconds = time.perf_counter() - start
        if stop.is_set():
            summary.stopped = "signal"
        stop.set()  # ends the reader thread if it is still waiting to hand over a record
    return summary


def _usable(batch: list[Record | Exception], settings: MonitorSettings, summary: Summary) -> list[Record]:
    records = []
    for item in batch:
        if isinstance(item, Record):
            records.append(item)
        elif isinstance(item, DataError) and settings.bad_lines == "skip":
            summary.skipped += 1
            logger.warning("skipped %s", item)
        else:
            raise item
    return records


def _alert(
    payload: dict[str, Any],
    emit: Callable[[dict[str, Any]], None],
    settings: MonitorSettings,
    summary: Summary,
) -> None:
    summary.alerts += 1
    logger.warning(
        "alert: topic %s negative share %.2f -> %.2f (jump %.2f) at %s",
        payload["topic"],
        payload["baseline_share"],
        payload["recent_share"],
        payload["jump"],
        payload["item"]["where"],
    )
    emit(payload)
    if not post_alert(payload, settings.webhook):
        summary.webhook_failures += 1
