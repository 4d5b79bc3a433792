"""The monitor's input: JSONL lines (a file, a growing file, stdin) -> records -> batches.

A reader thread turns lines into ``Record`` s (or the ``DataError`` of a bad line, for the consumer to
skip or raise) and hands them over a bounded queue; ``batches`` cuts the queue into batches of at most
``batch_size`` records, cutting early when the oldest waiting record has waited ``max_wait_seconds``,
so a slow stream is still classified promptly. The thread is hand-written: a blocking ``readline`` on a
pipe cannot be awaited by asyncio's stdlib without platform-specific code.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from tunelab.errors import DataError
from tunelab.io import utf8_error

_END = object()  # the reader's last queue item: no more records


@dataclass(frozen=True)
class Record:
    """One input text with its optional id, its time in seconds and where it was read (``file:line``)."""

    text: str
    id: Any
    time: float
    where: str


def parse_record(line: str, where: str, arrival: float) -> Record:
    """One JSONL line -> a ``Record``; the time is the line's ``time`` field or ``arrival``.

    ``time`` is seconds (a number) or an ISO 8601 timestamp; a line that is not a JSON object with a
    string ``text`` raises ``DataError`` naming ``where``.
    """
    bad = utf8_error(line)
    if bad is not None:
        raise DataError(f"{where}: {bad[1]}")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise DataError(f'{where}: expected a JSON object with a string "text" field')
    return Record(
        text=row["text"], id=row.get("id"), time=_seconds(row.get("time"), where, arrival), where=where
    )


def _seconds(value: Any, where: str, arrival: float) -> float:
    if value is None:
        return arrival
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise DataError(f'{where}: "time" must be seconds or an ISO 8601 timestamp, got {value!r}')


def read_lines(
    source: TextIO, name: str, stop: threading.Event, follow: bool = False, poll_seconds: float = 0.2
) -> Iterator[tuple[str, str]]:
    """(``name:line``, text) of each non-blank line of ``source``, until its end or ``stop``.

    With ``follow`` the end of the file is waited at (``tail -f``): a line without its newline yet is
    held back until the writer finishes it.
    """
    number, pending = 0, ""
    while not stop.is_set():
        chunk = source.readline()
        if chunk == "":
            if not follow:
                break
            time.sleep(poll_seconds)
            continue
        pending += chunk
        if follow and not pending.endswith("\n"):
            continue
        number += 1
        line, pending = pending.strip(), ""
        if line:
            yield f"{name}:{number}", line


def start_reader(lines: Iterator[tuple[str, str]], stop: threading.Event, size: int) -> queue.Queue[Any]:
    """A daemon thread parsing ``lines`` into a queue of ``Record`` / ``DataError``, then ``_END``."""
    out: queue.Queue[Any] = queue.Queue(maxsize=size)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for where, line in lines:
                try:
                    item: Any = parse_record(line, where, time.time())
                except DataError as exc:
                    item = exc
                if not put(item):
                    return
        except Exception as exc:  # a failing source (e.g. a read error) ends the stream with its error
            put(exc)
        put(_END)

    threading.Thread(target=run, name="monitor-reader", daemon=True).start()
    return out


def batches(
    records: queue.Queue[Any], batch_size: int, max_wait_seconds: float, stop: threading.Event
) -> Iterator[list[Record | Exception]]:
    """Queue items in batches of at most ``batch_size``, a partial one after ``max_wait_seconds``.

    A bad line's error travels in its batch, at its place, for the consumer to skip or raise. Ends at
    the reader's end or at ``stop``, yielding what was already batched (graceful stop).
    """
    batch: list[Record | Exception] = []
    deadline = 0.0
    while not stop.is_set():
        wait = 0.1 if not batch else min(0.1, max(0.0, deadline - time.monotonic()))
        try:
            item = records.get(timeout=wait)
        except queue.Empty:
            if batch and time.monotonic() >= deadline:
                yield batch
                batch = []
            continue
        if item is _END:
            break
        if not batch:
            deadline = time.monotonic() + max_wait_seconds
        batch.append(item)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
