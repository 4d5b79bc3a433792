"""Replay: a news stream with an injected burst of negative texts, and the monitor's latency on it.

The stream is news sentences (BBC test articles cut at sentence ends, shuffled by the seed) with
seeded exponential gaps between their ``time`` stamps (a feed of ``1 / mean_gap_seconds`` items a
second). The burst is ``burst_size`` negative Rotten Tomatoes reviews (test split, true label
negative) put at random places in the ``2 * burst_size`` stream positions from ``burst_at``: a wave of
negative film reviews, which the topic model routes mostly to entertainment. Nothing is relabelled;
where the models put each text is theirs to decide, as in production.

An alert whose item falls inside the burst or within one burst span after it counts as the burst's
(the first one gives the latency); every other alert is a false alarm.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.apps.monitor.job import Classifiers, Summary, run_monitor
from tunelab.apps.monitor.settings import MonitorSettings
from tunelab.apps.monitor.stream import read_lines
from tunelab.errors import DataError
from tunelab.io import open_text

# A sentence ends at . ! ? followed by space and a capital or a quote: enough for edited news text.
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z"])')


@dataclass(frozen=True)
class Replay:
    """A replay stream as JSONL text and where its burst lies (0-based item positions, inclusive)."""

    jsonl: str
    items: int
    burst_start: int
    burst_end: int


def _texts(path: Path, label: str | None = None) -> list[str]:
    """The ``text`` column of a prepared CSV (``tunelab data prepare``), rows of ``label`` only if given."""
    if not path.is_file():
        raise DataError(f"{path}: not found; write it with `tunelab data prepare`")
    with open_text(path) as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "text" not in rows[0] or (label is not None and "label" not in rows[0]):
        raise DataError(f"{path}:1: expected a CSV with text,label columns (tunelab data prepare)")
    return [row["text"] for row in rows if label is None or row["label"] == label]


def sentences(articles: Sequence[str], min_chars: int = 40) -> list[str]:
    """Articles cut at sentence ends; fragments shorter than ``min_chars`` (bylines, captions) dropped."""
    return [s for text in articles for s in _SENTENCE_END.split(text) if len(s) >= min_chars]


def build_replay(
    news: Sequence[str],
    negatives: Sequence[str],
    seed: int,
    items: int,
    burst_at: int,
    burst_size: int,
    mean_gap_seconds: float = 0.5,
) -> Replay:
    """``items`` stream texts: news sentences with ``burst_size`` negatives scattered from ``burst_at``."""
    if burst_at + 2 * burst_size > items or burst_size > len(negatives) or items - burst_size > len(news):
        raise DataError(
            f"replay of {items} items with a burst of {burst_size} at {burst_at} needs "
            f"{items - burst_size} news texts (have {len(news)}), {burst_size} negatives (have "
            f"{len(negatives)}) and burst_at + 2 * burst_size <= items"
        )
    rng = random.Random(seed)
    stream = rng.sample(list(news), items - burst_size)
    burst = sorted(rng.sample(range(burst_at, burst_at + 2 * burst_size), burst_size))
    for position, text in zip(burst, rng.sample(list(negatives), burst_size), strict=True):
        stream.insert(position, text)
    now, lines = 0.0, []
    for i, text in enumerate(stream):
        now += rng.expovariate(1 / mean_gap_seconds)
        lines.append(json.dumps({"id": i, "time": round(now, 3), "text": text}))
    return Replay("\n".join(lines) + "\n", items, burst[0], burst[-1])


def score_alerts(replay: Replay, alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Detection, latency (items and feed seconds from the burst's first item) and false alarms."""
    times = [json.loads(line)["time"] for line in replay.jsonl.splitlines()]
    span_end = replay.burst_end + (replay.burst_end - replay.burst_start + 1)
    burst = [a for a in alerts if replay.burst_start <= a["item"]["index"] <= span_end]
    first = burst[0] if burst else None
    return {
        "detected": first is not None,
        "latency_items": first["item"]["index"] - replay.burst_start if first else None,
        "latency_seconds": round(first["item"]["time"] - times[replay.burst_start], 2) if first else None,
        "alert_topic": first["topic"] if first else None,
        "false_alarms": len(alerts) - len(burst),
    }


def run_replays(
    settings: MonitorSettings,
    models: Classifiers,
    news_csv: Path,
    negatives_csv: Path,
    seeds: Sequence[int],
    items: int,
    burst_at: int,
    burst_size: int,
) -> list[dict[str, Any]]:
    """One row per seed: the replay's burst, its score and the monitor's throughput on it."""
    news = sentences(_texts(news_csv))
    negatives = _texts(negatives_csv, settings.negative_label)
    rows = []
    for seed in seeds:
        replay = build_replay(news, negatives, seed, items, burst_at, burst_size)
        alerts: list[dict[str, Any]] = []
        stop = threading.Event()
        lines = read_lines(io.StringIO(replay.jsonl), f"replay-seed{seed}", stop)
        summary: Summary = run_monitor(settings, models, lines, alerts.append, stop)
        rows.append(
            {
                "seed": seed,
                "items": summary.items,
                "burst": [replay.burst_start, replay.burst_end],
                **score_alerts(replay, alerts),
                "alerts": summary.alerts,
                "items_per_second": round(summary.items_per_second, 1),
            }
        )
    return rows
