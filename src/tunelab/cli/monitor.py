"""`tunelab monitor` and `tunelab apps monitor-replay`: the streaming sentiment/topic monitor of issue 20."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tunelab.cli.common import app, apps_app, fail, logger, setup_logging
from tunelab.errors import TunelabError

SETTINGS_HELP = "Monitor settings file (examples/apps/monitor/monitor_app.yaml)."


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the monitor finishes its batch and reports) instead of killing."""
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _emitter(alerts: Path | None) -> tuple[Callable[[dict[str, Any]], None], Callable[[], None]]:
    """(write one alert as a JSON line, close): to ``alerts`` (appended) or stdout, flushed per alert."""
    out = open(alerts, "a", encoding="utf-8") if alerts is not None else sys.stdout  # noqa: SIM115

    def emit(alert: dict[str, Any]) -> None:
        out.write(json.dumps(alert) + "\n")
        out.flush()

    return emit, (out.close if alerts is not None else lambda: None)


@app.command()
def monitor(
    settings_file: Annotated[Path, typer.Argument(help=SETTINGS_HELP)],
    input_: Annotated[
        str, typer.Option("--input", help="JSONL file of {text, id?, time?} records, or - for stdin.")
    ],
    follow: Annotated[bool, typer.Option(help="Keep reading the file as it grows (tail -f).")] = False,
    alerts: Annotated[
        Path | None, typer.Option(help="Append alert JSON lines here (default stdout).")
    ] = None,
) -> None:
    """Classify a text stream by sentiment and topic; one JSON line per alert; a summary on stderr at the end.

    Stops at the end of the input (with --follow: at SIGINT/SIGTERM) after classifying what it read.
    """
    setup_logging()
    stop = threading.Event()
    try:
        from tunelab.apps.monitor.job import load_classifiers, run_monitor
        from tunelab.apps.monitor.settings import load_monitor_settings
        from tunelab.apps.monitor.stream import read_lines
        from tunelab.io import open_text

        settings = load_monitor_settings(settings_file)
        if input_ != "-" and not Path(input_).is_file():
            raise TunelabError(f"--input: {input_} is not a file")
        if follow and input_ == "-":
            raise TunelabError("--follow: tails a file; stdin is read to its end anyway")
        models = load_classifiers(settings)
        source = sys.stdin if input_ == "-" else open_text(Path(input_))
        name = "<stdin>" if input_ == "-" else input_
        emit, close = _emitter(alerts)
        runs = (settings.sentiment_run, settings.topic_run)
        logger.info("monitoring %s (sentiment %s, topic %s)", name, *runs)
        try:
            with _stop_on_signals(stop):
                lines = read_lines(source, name, stop, follow, settings.poll_seconds)
                summary = run_monitor(settings, models, lines, emit, stop)
        finally:
            close()
            if source is not sys.stdin:
                source.close()
    except TunelabError as exc:
        fail(exc)
    logger.info(
        "monitor stopped (%s): %d items, %d alerts, %.1f items/s",
        summary.stopped,
        summary.items,
        summary.alerts,
        summary.items_per_second,
    )
    typer.echo(json.dumps({"summary": summary.as_dict()}), err=True)


@apps_app.command("monitor-replay")
def monitor_replay(
    settings_file: Annotated[Path, typer.Argument(help=SETTINGS_HELP)],
    news: Annotated[Path, typer.Option(help="News CSV (text,label): the stream's texts.")] = Path(
        "data/bbc-news/test.csv"
    ),
    negatives: Annotated[
        Path, typer.Option(help="Labelled CSV whose negative_label rows make the burst.")
    ] = Path("data/rotten-tomatoes/test.csv"),
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Replay seed (repeatable).")] = None,
    items: Annotated[int, typer.Option(min=1, help="Stream length, burst included.")] = 1000,
    burst_at: Annotated[int, typer.Option(min=0, help="First stream position the burst may take.")] = 600,
    burst_size: Annotated[int, typer.Option(min=1, help="Negative texts injected.")] = 60,
) -> None:
    """Replay news with an injected negative burst per seed; print alert latency and false alarms (JSONL)."""
    setup_logging()
    try:
        from tunelab.apps.monitor.job import load_classifiers
        from tunelab.apps.monitor.replay import run_replays
        from tunelab.apps.monitor.settings import load_monitor_settings

        settings = load_monitor_settings(settings_file)
        models = load_classifiers(settings)
        rows = run_replays(settings, models, news, negatives, seed or [0, 1, 2], items, burst_at, burst_size)
    except TunelabError as exc:
        fail(exc)
    for row in rows:
        typer.echo(json.dumps(row))
