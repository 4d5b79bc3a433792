"""`tunelab serve --workers 2` as a real process tree: both serve, metrics add up, SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_process import free_port, wait_until_ready  # tests/serving is on sys.path (rootdir import)
from typer.testing import CliRunner

from tunelab.cli import app as cli
from tunelab.serving.settings import load_settings
from tunelab.serving.workers import threads_per_worker, worker_environment

KEY = {"X-API-Key": "k"}
WAIT_S = 5.0  # max_wait_ms: a lone request's inputs stay queued this long, so the gauges can be read


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(httpx.get(url + "/metrics", headers=KEY, timeout=10).text)


def health_requests(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    labels = (("method", "GET"), ("route", "/health"), ("status", "200"))
    return metrics.get(("tunelab_requests_total", labels), 0.0)


@pytest.mark.slow
def test_two_workers_share_the_port_aggregate_metrics_and_drain(classifier_dir: Path, tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),  # the parent's metrics dir lands here, to check it is removed
        "TUNELAB_SERVE_API_KEY": "k",
        "TUNELAB_SERVE_MAX_BATCH_SIZE": "64",
        "TUNELAB_SERVE_MAX_QUEUE_SIZE": "64",
        "TUNELAB_SERVE_MAX_WAIT_MS": str(WAIT_S * 1000),
    }
    env.pop("TUNELAB_SERVE_TORCH_THREADS", None)
    command = "from tunelab.cli import app; app()"
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe would stall the server's logging
    with log.open("w") as out:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                command,
                "serve",
                str(classifier_dir),
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(url, proc)
        assert len(list(tmp_path.glob("tunelab-metrics-*"))) == 1
        children = psutil.Process(proc.pid).children(recursive=True)  # workers + multiprocessing's tracker
        workers = {c.pid for c in children if "resource_tracker" not in " ".join(c.cmdline())}
        assert len(workers) == 2

        # Fresh connections until both workers have answered (the second may still be loading the
        # model); the kernel hands each accept to either worker.
        pids: set[int] = set()
        sent = 0
        deadline = time.monotonic() + 60
        while pids != workers and time.monotonic() < deadline:
            pids.add(httpx.get(url + "/health", timeout=10).json()["pid"])
            sent += 1
        assert pids == workers, f"{sent} requests reached only {pids} of {workers}"
        # Both workers' counters, whichever one answers (a worker counts just after it responds).
        deadline = time.monotonic() + 5
        while (counted := health_requests(scrape(url))) != sent and time.monotonic() < deadline:
            time.sleep(0.1)
        assert counted == sent

        async def queued_request_and_gauges() -> tuple[int, dict[str, float], dict[str, float]]:
            async with httpx.AsyncClient(base_url=url, headers=KEY, timeout=30) as client:
                task = asyncio.create_task(client.post("/v1/predict", json={"inputs": ["good film"] * 32}))
                deadline = time.monotonic() + WAIT_S  # the inputs leave the queue later than this
                while True:
                    metrics = samples((await client.get("/metrics")).text)
                    if metrics.get(("tunelab_queue_depth", (("queue", "predict"),))) == 32:
                        break
                    assert time.monotonic() < deadline, "the 32 inputs never showed in the queue depth"
                    await asyncio.sleep(0.05)
                status = (await task).status_code
                after = samples((await client.get("/metrics")).text)
                return status, _load(metrics), _load(after)

        status, loaded, idle = asyncio.run(queued_request_and_gauges())
        assert status == 200
        # 32 queued inputs of a queue that holds 64 + a batch of 64: exactly a quarter full
        assert loaded == {"queue_depth": 32, "in_flight": 1, "saturation": 0.25}
        assert idle == {"queue_depth": 0, "in_flight": 0, "saturation": 0.0}

        async def drain() -> int:
            async with httpx.AsyncClient(base_url=url, headers=KEY, timeout=30) as client:
                task = asyncio.create_task(client.post("/v1/predict", json={"inputs": "good"}))
                await asyncio.sleep(0.5)  # accepted and queued, waiting WAIT_S for company
                proc.send_signal(signal.SIGTERM)
                return (await task).status_code

        assert asyncio.run(drain()) == 200
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code == 0, output  # the parent exits non-zero when a worker did not exit 0
    # multiprocessing's resource tracker ends on its own once the parent is gone; give it a moment
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not [(p.pid, p.cmdline()) for p in alive if p.status() != psutil.STATUS_ZOMBIE], "orphans"
    assert not list(tmp_path.glob("tunelab-metrics-*")), "the metrics dir was left behind"
    cores = len(os.sched_getaffinity(0))
    assert f"2 workers x {max(1, cores // 2)} torch threads" in output


def _load(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        "queue_depth": metrics[("tunelab_queue_depth", (("queue", "predict"),))],
        "in_flight": metrics[("tunelab_requests_in_flight", ())],
        "saturation": metrics[("tunelab_saturation", ())],
    }


@pytest.mark.parametrize(
    ("explicit", "cores", "expected"), [(None, 8, 4), (None, 2, 1), (None, 1, 1), (3, 8, 3)]
)
def test_threads_per_worker_share_the_cores_unless_set(explicit: int | None, cores: int, expected: int):
    settings = load_settings(model_dir="m", torch_threads=explicit)
    assert threads_per_worker(settings, workers=2, cores=cores) == expected


def test_worker_environment_rebuilds_the_parent_settings(monkeypatch: pytest.MonkeyPatch):
    parent = load_settings(model_dir="runs/x", host="0.0.0.0", port=9001, allow_unauthenticated=True)
    for name, value in worker_environment(parent, threads=3).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == parent.model_copy(update={"torch_threads": 3})


def test_workers_refuse_an_exposed_host_without_a_key_before_starting(
    classifier_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    for var in (
        "TUNELAB_SERVE_API_KEY",
        "TUNELAB_SERVE_API_KEYS_FILE",
        "TUNELAB_SERVE_ALLOW_UNAUTHENTICATED",
    ):
        monkeypatch.delenv(var, raising=False)
    args = ["serve", str(classifier_dir), "--host", "0.0.0.0", "--workers", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "refusing to serve on 0.0.0.0 without an API key" in result.output


@pytest.mark.slow
def test_workers_that_cannot_load_the_model_stop_the_server_with_an_error(tmp_path: Path):
    """Without STARTUP_FAILURE, uvicorn would restart the failing workers for ever."""
    env = {**os.environ, "TUNELAB_SERVE_API_KEY": "k"}
    command = "from tunelab.cli import app; app()"
    missing = str(tmp_path / "no-model")
    argv = [sys.executable, "-c", command, "serve", missing, "--port", str(free_port()), "--workers", "2"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1
    assert "worker processes exited with errors" in done.stderr
    assert "is neither a shipped model" in done.stderr
