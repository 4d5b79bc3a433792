"""Process-level behaviour: startup checks (CLI and the --factory entry point) and SIGTERM draining."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tunelab.cli import app as cli
from tunelab.errors import ServingError
from tunelab.serving.app import app_from_env

HELPER = Path(__file__).with_name("slow_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 120) -> None:
    """Poll ``/ready`` (API key "k") until 200; fail if the server process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/ready", headers={"X-API-Key": "k"}, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "server exited during startup"
        assert time.monotonic() < deadline, f"server not ready within {timeout} s"
        time.sleep(0.1)


def test_sigterm_drains_in_flight_requests_and_exits_0(classifier_dir: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(classifier_dir), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_ready(url, proc)

        async def scenario() -> tuple[list[int], bool]:
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": "k"}, timeout=30) as c:
                inflight = [
                    asyncio.create_task(c.post("/v1/predict", json={"inputs": "good"})) for _ in range(3)
                ]
                await asyncio.sleep(0.3)  # all three accepted; the model works through them 0.5 s each
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                try:
                    httpx.get(url + "/health", timeout=2)
                    refused = False
                except httpx.TransportError:
                    refused = True
                return [(await t).status_code for t in inflight], refused

        statuses, refused = asyncio.run(scenario())
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read() if proc.stdout else ""
    assert statuses == [200, 200, 200], output
    assert refused, "new connections must be refused once draining starts"
    assert code == 0, output


def test_serve_refuses_remote_host_without_key(classifier_dir: Path, monkeypatch: pytest.MonkeyPatch):
    for var in (
        "TUNELAB_SERVE_API_KEY",
        "TUNELAB_SERVE_API_KEYS_FILE",
        "TUNELAB_SERVE_ALLOW_UNAUTHENTICATED",
    ):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(cli, ["serve", str(classifier_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve on 0.0.0.0 without an API key" in result.output


def test_serve_reports_bad_settings_by_key(classifier_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TUNELAB_SERVE_MAX_BATCH_SIZE", "0")
    result = CliRunner().invoke(cli, ["serve", str(classifier_dir)])
    assert result.exit_code == 2
    assert "max_batch_size: Input should be greater than or equal to 1" in result.output


def test_env_factory_builds_the_app_and_demands_a_key(classifier_dir: Path, monkeypatch: pytest.MonkeyPatch):
    for var in (
        "TUNELAB_SERVE_API_KEY",
        "TUNELAB_SERVE_API_KEYS_FILE",
        "TUNELAB_SERVE_ALLOW_UNAUTHENTICATED",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TUNELAB_SERVE_MODEL_DIR", str(classifier_dir))
    with pytest.raises(ServingError, match="behind uvicorn --factory"):
        app_from_env()
    monkeypatch.setenv("TUNELAB_SERVE_API_KEY", "k")
    monkeypatch.setenv("TUNELAB_SERVE_MAX_BATCH_SIZE", "3")
    paths = {getattr(route, "path", None) for route in app_from_env().routes}
    assert {"/v1/predict", "/v1/embeddings", "/health"} <= paths
