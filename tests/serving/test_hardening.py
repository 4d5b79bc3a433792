"""Input hardening: blank and unreadable text, unknown models, the OpenAPI document, key checks, /health."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tunelab.cli import app as cli
from tunelab.errors import ServingError
from tunelab.serving.app import app_from_env, app_from_settings, create_app
from tunelab.serving.predictor import Predictor, load_predictor
from tunelab.serving.settings import ServeSettings, load_settings

KEY_VARS = ("TUNELAB_SERVE_API_KEY", "TUNELAB_SERVE_API_KEYS_FILE", "TUNELAB_SERVE_ALLOW_UNAUTHENTICATED")
MODEL_ROUTE_CODES = {"401", "404", "413", "422", "429", "503", "504"}


@pytest.fixture(scope="module")
def clf(classifier: Predictor, api_key: str) -> Iterator[TestClient]:
    """The tiny classifier's app (predict + embeddings), lifespan running."""
    settings = ServeSettings(model_dir="tiny", api_key=api_key, max_input_tokens=24)
    with TestClient(create_app(settings, classifier), headers={"X-API-Key": api_key}) as client:
        yield client


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path, api_key: str) -> Iterator[TestClient]:
    """The tiny Llama's app (completions + chat)."""
    settings = ServeSettings(model_dir="tiny", api_key=api_key, max_new_tokens=16, max_input_tokens=64)
    with TestClient(
        create_app(settings, load_predictor(str(tiny_llama_dir))), headers={"X-API-Key": api_key}
    ) as c:
        yield c


def refused(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param
    if param is not None:
        assert error["message"].startswith(f"{param}: ")  # the message names the field too
    return error


CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("app", "path", "body", "where"),
    [
        ("clf", "/v1/predict", {"inputs": "   "}, "inputs[0]"),
        ("clf", "/v1/predict", {"inputs": ["good", "\t\n "]}, "inputs[1]"),
        ("clf", "/v1/embeddings", {"input": ""}, "input"),
        ("clf", "/v1/embeddings", {"input": ["good", " "]}, "input[1]"),
        ("lm", "/v1/completions", {"prompt": " \n"}, "prompt"),
        (
            "lm",
            CHAT,
            {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": " "}]},
            "messages[1].content",
        ),
    ],
)
def test_blank_text_is_refused_naming_the_field(
    request: pytest.FixtureRequest, app: str, path: str, body: dict[str, Any], where: str
):
    error = refused(request.getfixturevalue(app).post(path, json=body), 422, where)
    assert "blank text" in error["message"]


@pytest.mark.parametrize(
    ("app", "path", "body", "where"),
    [
        ("clf", "/v1/predict", {"inputs": ["good", "a\ud800b"]}, "inputs[1]"),
        ("clf", "/v1/embeddings", {"input": "bad \udfff"}, "input"),
        ("lm", "/v1/completions", {"prompt": "the \ud800"}, "prompt"),
        ("lm", CHAT, {"messages": [{"role": "user", "content": "hello \ud800"}]}, "messages"),
    ],
)
def test_text_the_tokenizer_rejects_is_a_422_naming_the_field(
    request: pytest.FixtureRequest, app: str, path: str, body: dict[str, Any], where: str
):
    client = request.getfixturevalue(app)
    raw = json.dumps(body)  # ensure_ascii: the lone surrogate travels as the JSON escape \ud800
    assert "\\ud800" in raw or "\\udfff" in raw
    response = client.post(path, content=raw, headers={"Content-Type": "application/json"})
    error = refused(response, 422, where)
    assert "tokenizer cannot read" in error["message"]
    readable = json.loads(raw.replace("\\ud800", "").replace("\\udfff", ""))
    assert client.post(path, json=readable).status_code == 200  # the same request, minus the surrogate


@pytest.mark.parametrize(
    ("app", "path", "body"),
    [
        ("clf", "/v1/predict", {"inputs": "good"}),
        ("clf", "/v1/embeddings", {"input": "good"}),
        ("lm", "/v1/completions", {"prompt": "the movie", "max_tokens": 2}),
        ("lm", CHAT, {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}),
    ],
)
def test_model_field_unknown_is_404_model_not_found_and_served_or_absent_is_200(
    request: pytest.FixtureRequest, app: str, path: str, body: dict[str, Any]
):
    client = request.getfixturevalue(app)
    served = client.get("/v1/models").json()["data"][0]["id"]
    error = refused(client.post(path, json={**body, "model": "gpt-4"}), 404, "model")
    assert error["code"] == "model_not_found"
    assert repr(served) in error["message"]
    assert client.post(path, json={**body, "model": served}).status_code == 200
    assert client.post(path, json=body).status_code == 200


def test_openapi_documents_error_codes_plain_text_metrics_and_keys(clf: TestClient, lm: TestClient):
    for client, routes in ((clf, ["/v1/predict", "/v1/embeddings"]), (lm, ["/v1/completions", CHAT])):
        doc = TestClient(client.app).get("/openapi.json").json()  # no key needed
        for route in routes:
            responses = doc["paths"][route]["post"]["responses"]
            assert set(responses) >= MODEL_ROUTE_CODES, route
            assert responses["422"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
        metrics = doc["paths"]["/metrics"]["get"]["responses"]
        assert set(metrics["200"]["content"]) == {"text/plain"}
        assert set(doc["paths"]["/ready"]["get"]["responses"]) == {"200", "401", "503"}
        assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert doc["paths"]["/health"]["get"]["security"] == []
    assert "text/plain" in clf.get("/metrics").headers["content-type"]


def test_docs_and_schema_need_no_key_but_the_api_does(clf: TestClient):
    bare = TestClient(clf.app)  # no key header; the module's client keeps the lifespan running
    assert bare.get("/openapi.json").status_code == 200
    docs = bare.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    for path in ("/v1/models", "/ready", "/metrics"):
        assert bare.get(path).status_code == 401, path
    assert bare.post("/v1/predict", json={"inputs": "good"}).status_code == 401


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_api_key_refuses_to_start(classifier: Predictor, key: str):
    with pytest.raises(ServingError, match="TUNELAB_SERVE_API_KEY is set but empty"):
        create_app(ServeSettings(model_dir="m", api_key=key), classifier)


def test_keys_file_without_keys_refuses_to_start(classifier: Predictor, tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("# no keys yet\n\n", encoding="utf-8")
    with pytest.raises(ServingError, match="holds no key"):
        create_app(ServeSettings(model_dir="m", api_keys_file=keys), classifier)


def test_empty_key_variable_refuses_cli_and_factory(classifier_dir: Path, monkeypatch: pytest.MonkeyPatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TUNELAB_SERVE_API_KEY", "")
    result = CliRunner().invoke(cli, ["serve", str(classifier_dir)])
    assert result.exit_code == 1
    assert "TUNELAB_SERVE_API_KEY is set but empty" in result.output
    monkeypatch.setenv("TUNELAB_SERVE_MODEL_DIR", str(classifier_dir))
    with pytest.raises(ServingError, match="TUNELAB_SERVE_API_KEY is set but empty"):
        app_from_env()


def test_no_auth_on_loopback_serves_without_key_and_warns(
    classifier_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    settings = load_settings(model_dir=str(classifier_dir), api_key="", allow_unauthenticated=True)
    with caplog.at_level(logging.WARNING, logger="tunelab.serving"):
        web = app_from_settings(settings, bind_host="127.0.0.1")
    assert "serving without an API key (--no-auth)" in caplog.text
    with TestClient(web) as client:
        assert client.post("/v1/predict", json={"inputs": "good"}).status_code == 200
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TUNELAB_SERVE_API_KEY", "")
    started: list[ServeSettings] = []
    monkeypatch.setattr("tunelab.serving.app.run", lambda web, settings: started.append(settings))
    result = CliRunner().invoke(cli, ["serve", str(classifier_dir), "--no-auth"])
    assert result.exit_code == 0, result.output
    assert started[0].allow_unauthenticated


SENDER = """
import sys, threading, httpx
url, path, key = sys.argv[1:]
body = open(path, "rb").read()
headers = {"X-API-Key": key, "Content-Type": "application/json"}
statuses = []
def post():
    statuses.append(httpx.post(url + "/v1/predict", content=body, headers=headers, timeout=120).status_code)
threads = [threading.Thread(target=post) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(" ".join(map(str, statuses)))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_process(model_dir: Path, **settings: str) -> Iterator[str]:
    """``uvicorn --factory`` serving ``model_dir`` in its own process; yields the base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELAB_SERVE_")}
    env |= {f"TUNELAB_SERVE_{k.upper()}": v for k, v in {"model_dir": str(model_dir), **settings}.items()}
    factory = ["-m", "uvicorn", "--factory", "tunelab.serving.app:app_from_env", "--log-level", "warning"]
    proc = subprocess.Popen([sys.executable, *factory, "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, "server exited during startup"
                assert time.monotonic() < deadline, "server did not start within 120 s"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_health_answers_fast_while_megabyte_inputs_are_tokenised(classifier_dir: Path, tmp_path: Path):
    """Four ~1 MB inputs are counted (then refused as too long) while /health is probed.

    Server, senders and prober are separate processes, so what is measured is the server's event loop
    alone. Counting one such input takes the tokenizer about a second; counted on the event loop,
    every probe in the meantime would wait for it.
    """
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"inputs": "the movie was good " * 55_000}))  # ~1 MB, 220k tokens
    latencies = []
    with uvicorn_process(classifier_dir, api_key="k", max_body_bytes="4000000") as url:
        with httpx.Client(base_url=url) as client:
            sender = subprocess.Popen(
                [sys.executable, "-c", SENDER, url, str(body), "k"], stdout=subprocess.PIPE, text=True
            )
            start = time.monotonic()
            while sender.poll() is None:
                began = time.perf_counter()
                assert client.get("/health").status_code == 200
                latencies.append(time.perf_counter() - began)
                time.sleep(0.01)
            busy = time.monotonic() - start
        statuses = sender.communicate()[0].split()
    assert statuses == ["422"] * 4  # counted, then refused: 220k tokens > max_input_tokens
    assert busy > 0.5, "the inputs were counted too fast for the probe to mean anything"
    latencies.sort()
    assert len(latencies) >= 20
    assert latencies[len(latencies) // 2] < 0.05  # median
    assert latencies[int(len(latencies) * 0.9)] < 0.05  # p90
    # The worst probe: never stalled behind a count (counting on the loop, it waits >= one count, about
    # busy / 4), with room for a loaded 2-core CI box.
    assert latencies[-1] < min(0.25, busy / 8)
