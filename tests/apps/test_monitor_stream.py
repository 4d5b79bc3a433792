"""``tunelab monitor`` on tiny saved runs: alerts on stdout and at a loopback webhook, bad lines, stops."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from toy_tasks import toy_rows
from tunelab.apps.monitor import job
from tunelab.apps.monitor.settings import MonitorSettings, WindowSettings
from tunelab.apps.monitor.stream import parse_record, read_lines
from tunelab.cli import app
from tunelab.errors import DataError

CALM = [text for text, label in toy_rows(200, seed=11) if label == "positive"]
ANGRY = [text for text, label in toy_rows(200, seed=12) if label == "negative"]
WINDOW = {
    "baseline": 20,
    "recent": 10,
    "threshold": 0.4,
    "min_recent_items": 5,
    "min_baseline_items": 5,
    "cooldown": 100,
}


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server recording the JSON bodies POSTed to it: (url, bodies); /fail answers 500."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(500 if self.path.startswith("/fail") else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts?token=secret", bodies
    server.shutdown()
    server.server_close()


def _settings(tmp_path: Path, sentiment: Path, topic: Path, **extra: Any) -> Path:
    raw = {"sentiment_run": str(sentiment), "topic_run": str(topic), "window": WINDOW, **extra}
    path = tmp_path / "monitor_app.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _jsonl(path: Path, texts: list[str], extra_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps({"id": i, "text": text}) for i, text in enumerate(texts)]
    for at, line in sorted((extra_lines or {}).items()):
        lines.insert(at, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _flat(log: str) -> str:
    """Log text without whitespace: rich wraps long lines anywhere, paths included."""
    return "".join(log.split())


def _summary(stderr: str) -> dict[str, Any]:
    return json.loads(next(line for line in stderr.splitlines() if line.startswith('{"summary"')))["summary"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', 'a string "text"'),
        ('{"text": 3}', 'a string "text"'),
        ('{"text": "x", "time": "yesterday"}', '"time" must be seconds or an ISO 8601'),
    ],
)
def test_parse_record_errors_name_file_and_line(line: str, problem: str):
    with pytest.raises(DataError, match=rf"^in\.jsonl:7: .*{problem}"):
        parse_record(line, "in.jsonl:7", 0.0)


def test_parse_record_reads_id_and_iso_time():
    record = parse_record('{"id": "a1", "text": "hi", "time": "1970-01-01T00:01:40+00:00"}', "f:1", 5.0)
    assert (record.id, record.time, record.where) == ("a1", 100.0, "f:1")
    assert parse_record('{"text": "hi"}', "f:2", 5.0).time == 5.0  # no time: the arrival time


def test_monitor_alerts_on_the_burst_to_stdout_and_the_webhook(
    toy_sentiment_run: Path, random_topic_run: Path, tmp_path: Path, webhook
):
    url, bodies = webhook
    settings = _settings(tmp_path, toy_sentiment_run, random_topic_run, webhook={"url": url})
    stream = _jsonl(tmp_path / "in.jsonl", CALM[:30] + ANGRY[:20] + CALM[30:40])
    result = CliRunner().invoke(app, ["monitor", str(settings), "--input", str(stream)])
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(alerts) == 1, result.output
    alert = alerts[0]
    assert 30 <= alert["item"]["index"] < 40
    assert alert["item"]["id"] == alert["item"]["index"]
    assert alert["item"]["where"] == f"{stream}:{alert['item']['index'] + 1}"
    assert alert["topic"] in ("business", "sport")
    assert alert["jump"] >= 0.4
    assert alert["recent_share"] - alert["baseline_share"] == pytest.approx(alert["jump"], abs=1e-3)
    assert bodies == [alert]
    assert "secret" not in result.output
    summary = _summary(result.stderr)
    assert (summary["items"], summary["alerts"], summary["skipped"]) == (60, 1, 0)
    assert summary["stopped"] == "end of input"
    assert summary["items_per_second"] > 0


def test_monitor_skips_or_fails_on_a_bad_line_by_its_file_and_line(
    toy_sentiment_run: Path, random_topic_run: Path, tmp_path: Path
):
    stream = _jsonl(tmp_path / "in.jsonl", CALM[:6], {2: "{broken"})
    skip = _settings(tmp_path, toy_sentiment_run, random_topic_run)
    skipped = CliRunner().invoke(app, ["monitor", str(skip), "--input", str(stream)])
    assert skipped.exit_code == 0, skipped.output
    assert f"{stream}:3:notJSON" in _flat(skipped.stderr)
    assert (_summary(skipped.stderr)["items"], _summary(skipped.stderr)["skipped"]) == (6, 1)
    fail = _settings(tmp_path, toy_sentiment_run, random_topic_run, bad_lines="fail")
    failed = CliRunner().invoke(app, ["monitor", str(fail), "--input", str(stream)])
    assert failed.exit_code == 1
    assert any(line.startswith(f"error: {stream}:3: not JSON") for line in failed.stderr.splitlines())


def test_monitor_survives_a_failing_webhook_and_reads_stdin_to_its_end(
    toy_sentiment_run: Path, random_topic_run: Path, tmp_path: Path, webhook
):
    url, bodies = webhook
    hook = {"url": url.replace("/alerts", "/fail"), "retries": 1, "backoff_seconds": 0}
    settings = _settings(tmp_path, toy_sentiment_run, random_topic_run, webhook=hook)
    lines = "".join(json.dumps({"text": t}) + "\n" for t in CALM[:30] + ANGRY[:20])
    result = CliRunner().invoke(app, ["monitor", str(settings), "--input", "-"], input=lines)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1  # the alert is still written
    assert len(bodies) == 2  # the first attempt and one retry
    assert "failedafter2attempts(HTTP500)" in _flat(result.stderr)
    summary = _summary(result.stderr)
    assert (summary["items"], summary["alerts"], summary["webhook_failures"]) == (50, 1, 1)


def test_monitor_refuses_a_negative_label_the_run_does_not_have(
    toy_sentiment_run: Path, random_topic_run: Path, tmp_path: Path
):
    settings = _settings(tmp_path, toy_sentiment_run, random_topic_run, negative_label="rotten")
    result = CliRunner().invoke(app, ["monitor", str(settings), "--input", "-"], input="")
    assert result.exit_code == 2
    assert "negative_label: 'rotten' is not a label" in result.stderr
    assert "['negative', 'positive']" in result.stderr


def test_monitor_keeps_a_window_per_topic(monkeypatch: pytest.MonkeyPatch):
    """A burst in one topic alerts there only, however calm the other topic is (models stubbed)."""

    def by_prefix(models: Any, texts: list[str], batch_size: int) -> list[tuple[str, bool]]:
        return [(text[0], text[1] == "-") for text in texts]

    monkeypatch.setattr(job, "classify", by_prefix)
    settings = MonitorSettings(
        sentiment_run=Path("s"), topic_run=Path("t"), batch_size=7, window=WindowSettings(**WINDOW)
    )
    # topic a: 40 calm; topic b: 20 calm then 15 negative, interleaved a, b, a, b, ...; b's 24th item
    # (b 20-23 negative in its recent 10) makes a jump of 0.4, at stream index 2 * 23 + 1
    texts = [
        t for pair in zip(["a+"] * 40, ["b+"] * 20 + ["b-"] * 15 + ["b+"] * 5, strict=True) for t in pair
    ]
    source = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    stop = threading.Event()
    alerts: list[dict[str, Any]] = []
    summary = job.run_monitor(settings, None, read_lines(io.StringIO(source), "s", stop), alerts.append, stop)  # type: ignore[arg-type]
    assert [(a["topic"], a["item"]["index"]) for a in alerts] == [("b", 2 * 23 + 1)]
    assert summary.per_topic == {"a": 40, "b": 40}


def test_monitor_follows_a_growing_file_and_stops_on_sigterm_with_a_summary(
    toy_sentiment_run: Path, random_topic_run: Path, tmp_path: Path
):
    """In-process: the CLI's SIGTERM handler replaces the test's, which fails the test if it is reached."""
    settings = _settings(tmp_path, toy_sentiment_run, random_topic_run, poll_seconds=0.05)
    stream = _jsonl(tmp_path / "in.jsonl", CALM[:30])
    alerts = tmp_path / "alerts.jsonl"

    def feed() -> None:
        _wait_for(alerts.exists)  # the monitor opened its outputs and reads
        time.sleep(0.5)  # ...up to the end of the file, which it now tails
        with stream.open("a", encoding="utf-8") as fh:
            for i, text in enumerate(ANGRY[:20], start=30):
                fh.write(json.dumps({"id": i, "text": text}) + "\n")
        _wait_for(lambda: alerts.read_text() != "")
        os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(*_: Any) -> None:
        raise AssertionError("SIGTERM reached the test: the monitor installed no handler")

    previous = signal.signal(signal.SIGTERM, unhandled)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        args = ["monitor", str(settings), "--input", str(stream), "--follow", "--alerts", str(alerts)]
        result = CliRunner().invoke(app, args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    feeder.join(timeout=10)
    assert result.exit_code == 0, result.output
    [alert] = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert 30 <= alert["item"]["index"] < 50
    summary = _summary(result.stderr)
    assert summary["stopped"] == "signal"
    assert summary["alerts"] == 1
    assert alert["item"]["index"] < summary["items"] <= 50


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
