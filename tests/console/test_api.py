"""The console's JSON API: runs table, comparison, metrics stream, starting runs, the auth and path rules."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tunelab.console.app import check_exposure, create_app
from tunelab.console.jobs import check_start, example_path
from tunelab.errors import ConfigError, ServingError

KEY = "console-key-0123456789"


@pytest.fixture
def client(runs_root: Path, examples_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(runs_root, examples_dir)) as c:
        yield c


def test_runs_listing_sorts_and_filters(client: TestClient, runs_root: Path) -> None:
    rows = client.get("/api/runs").json()
    assert [r["name"] for r in rows] == ["sent-full", "sent-lora", "sent-moe", "sweep/trial-0"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["sent-lora"]["methods"] == ["lora"]
    assert by_name["sent-full"]["methods"] == ["full"]
    assert by_name["sent-full"]["status"] == "finished"
    assert by_name["sweep/trial-0"]["status"] == "stopped"
    assert by_name["sweep/trial-0"]["step"] == 12
    evals = [
        r for r in map(json.loads, (runs_root / "sweep/trial-0/metrics.jsonl").open()) if "eval/accuracy" in r
    ]
    assert (
        by_name["sweep/trial-0"]["metrics"]["eval/accuracy"]
        == evals[-1]["eval/accuracy"]
        != evals[0]["eval/accuracy"]
    )

    ranked = client.get("/api/runs", params={"sort": "dev/accuracy"}).json()
    assert [r["name"] for r in ranked] == [
        "sent-lora",
        "sent-moe",
        "sent-full",
        "sweep/trial-0",
    ]  # no metric: last
    ascending = client.get("/api/runs", params={"sort": "dev/accuracy", "desc": False}).json()
    assert [r["name"] for r in ascending][:3] == ["sent-full", "sent-moe", "sent-lora"]
    assert [r["name"] for r in client.get("/api/runs", params={"method": "moe"}).json()] == ["sent-moe"]
    assert client.get("/api/runs", params={"task": "token_classification"}).json() == []


def test_run_detail_has_curves_inputs_and_expert_load(client: TestClient) -> None:
    run = client.get("/api/runs/sent-moe").json()
    assert run["config"]["methods"][0]["name"] == "moe"
    assert run["expert_load"] == [[40.0, 10.0, 30.0, 20.0], [25.0, 25.0, 25.0, 25.0]]
    assert run["reports"]["dev"]["accuracy"] == 0.85
    assert client.get("/api/runs/sent-full").json()["expert_load"] == []


def test_compare_diffs_configs_and_returns_every_history(client: TestClient) -> None:
    out = client.get(
        "/api/compare", params=[("run", "sent-full"), ("run", "sent-lora"), ("run", "sweep/trial-0")]
    ).json()
    diff = {row["key"]: row["values"] for row in out["config_diff"]}
    assert diff["train.lr"] == [3e-3, 1e-3, 5e-4]
    assert diff["methods[0].name"] == ["full", "lora", "full"]
    assert diff["methods[0].params.r"] == [None, 4, None]  # absent where the method has no such param
    assert "train.batch_size" not in diff  # equal everywhere
    assert [len(out["histories"][n]) for n in ("sent-full", "sent-lora", "sweep/trial-0")] == [36, 36, 14]
    assert client.get("/api/compare", params={"run": "sent-full"}).status_code == 422  # 2-4 runs
    five = [("run", n) for n in ("sent-full", "sent-lora", "sent-moe", "sweep/trial-0", "sent-full")]
    assert client.get("/api/compare", params=five).status_code == 422


def _events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines.get("event", "message"), json.loads(lines["data"])))
    return out


def test_metrics_stream_sends_records_then_end_and_never_half_a_line(
    client: TestClient, runs_root: Path
) -> None:
    history = runs_root / "sweep" / "trial-0" / "metrics.jsonl"
    with open(history, "a") as fh:
        fh.write('{"step": 13, "train/lo')  # a record cut off by a kill: never complete
    os.utime(history, (time.time() - 3600, time.time() - 3600))  # killed long ago, not training
    events = _events(client.get("/api/runs/sweep/trial-0/events").text)
    assert [kind for kind, _ in events] == ["message", "end"]
    records = events[0][1]
    assert [r["step"] for r in records][-1] == 12
    assert len(records) == 14
    assert events[1][1] == "stopped"


def test_metrics_stream_follows_a_run_training_elsewhere(
    client: TestClient, runs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `tunelab train` started in a shell: records written while the stream is open arrive, then end."""
    history = runs_root / "sweep" / "trial-0" / "metrics.jsonl"
    lines = history.read_text().splitlines(keepends=True)
    history.write_text("".join(lines[:2]))
    monkeypatch.setattr("tunelab.console.runs.ACTIVE_S", 1.0)
    monkeypatch.setattr("tunelab.console.app.POLL_S", 0.05)

    def train() -> None:
        for line in lines[2:]:
            time.sleep(0.1)
            with open(history, "a") as fh:
                fh.write(line)

    writer = threading.Thread(target=train)
    writer.start()
    assert client.get("/api/runs").json()[-1]["status"] == "running"
    events = _events(client.get("/api/runs/sweep/trial-0/events").text)
    writer.join()
    assert events[-1] == ("end", "stopped")
    batches = [data for kind, data in events if kind == "message"]
    assert len(batches) > 3  # arrived as written, not at once
    assert [r for batch in batches for r in batch] == [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    "name", ["../outside", "..%2Foutside", "sent-full/../../outside", "%2Ftmp", "link-out", "sent-full/best"]
)
def test_run_dirs_outside_the_root_are_refused(client: TestClient, runs_root: Path, name: str) -> None:
    outside = runs_root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "run_config.yaml").write_text("task: {name: secret}\n")
    (runs_root / "link-out").symlink_to(outside)
    for route in (f"/api/runs/{name}", f"/api/runs/{name}/events"):
        resp = client.get(route)
        assert resp.status_code == 404, route
        assert "secret" not in resp.text
    assert client.get("/api/compare", params=[("run", "sent-full"), ("run", name)]).status_code == 404
    assert "link-out" not in [r["name"] for r in client.get("/api/runs").json()]


def test_start_validates_by_field_and_refuses_bad_names(
    client: TestClient, runs_root: Path, examples_dir: Path
) -> None:
    resp = client.post(
        "/api/start",
        json={"example": "toy.yaml", "name": "sent-full", "fields": {"train.lr": "fast", "train.bogus": "1"}},
    )
    assert resp.status_code == 422
    fields = {e["field"]: e["message"] for e in resp.json()["fields"]}
    assert set(fields) == {"name", "train.lr", "train.bogus"}
    assert "exists" in fields["name"]
    assert "valid number" in fields["train.lr"]
    assert "unknown key" in fields["train.bogus"]
    bad_method = {
        "example": "toy.yaml",
        "name": "new",
        "fields": {"methods": "[{name: lora, params: {r: 0}}]"},
    }
    assert [e["field"] for e in client.post("/api/start", json=bad_method).json()["fields"]] == [
        "methods[0].params.r"
    ]
    for name in ("../escape", "a/b", ".hidden"):
        body = {"example": "toy.yaml", "name": name, "fields": {}}
        assert [e["field"] for e in client.post("/api/start", json=body).json()["fields"]] == ["name"]
    with pytest.raises(ConfigError, match="name: .* exists"):  # started here, its dir not made yet
        check_start(examples_dir, runs_root, "toy.yaml", "new", {}, started={"new"})
    missing = client.post("/api/start", json={"example": "../toy.yaml", "name": "new", "fields": {}}).json()
    assert missing["fields"][0]["field"] == "example"
    assert not (runs_root / "new").exists()
    assert not (runs_root.parent / "escape").exists()


def test_examples_in_sub_directories_are_listed_and_shown_but_app_settings_and_links_are_not(
    client: TestClient, examples_dir: Path, tmp_path: Path
) -> None:
    recipe = examples_dir / "apps" / "recipe"
    recipe.mkdir(parents=True)
    (recipe / "run.yaml").write_text((examples_dir / "toy.yaml").read_text())
    (recipe / "serve_app.yaml").write_text("runs: {}\n")
    outside = tmp_path / "outside.yaml"
    outside.write_text("secret: 1\n")
    (examples_dir / "linked.yaml").symlink_to(outside)
    assert client.get("/api/examples").json() == ["apps/recipe/run.yaml", "toy.yaml"]
    shown = client.get("/api/examples/apps/recipe/run.yaml")
    assert shown.status_code == 200
    assert "tiny-bert" in shown.json()["text"]
    for name in ("apps/recipe/serve_app.yaml", "linked.yaml"):
        assert client.get(f"/api/examples/{name}").status_code == 422, name
    for name in ("apps/../toy.yaml", str(examples_dir / "toy.yaml")):  # an HTTP client normalises ".."
        with pytest.raises(ConfigError, match="example: no example config"):
            example_path(examples_dir, name)


def test_non_loopback_needs_a_key_and_the_api_then_requires_it(runs_root: Path, examples_dir: Path) -> None:
    with pytest.raises(ServingError, match="without an API key"):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", KEY)
    check_exposure("127.0.0.1", None)
    with TestClient(create_app(runs_root, examples_dir, api_key=KEY)) as c:
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/api/runs/sent-full/events", headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/static/index.html").status_code == 200  # the page itself holds no data


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps(
            {"auth": self.headers["Authorization"], "got": json.loads(body), "path": self.path}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_playground_forwards_key_and_body_and_logs_neither(client: TestClient, caplog: Any) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        payload = {"inputs": ["secret text"]}
        resp = client.post(
            "/api/playground",
            json={"url": url, "api_key": "k-123", "path": "/v1/predict", "payload": payload},
        )
        assert resp.json() == {
            "status": 200,
            "body": {"auth": "Bearer k-123", "got": payload, "path": "/v1/predict"},
        }
        refused = client.post("/api/playground", json={"url": url, "path": "/admin", "payload": {}})
        assert refused.status_code == 422
        assert (
            client.post("/api/playground", json={"url": "file:///etc/passwd", "path": "/health"}).status_code
            == 422
        )
    finally:
        server.shutdown()
        server.server_close()
    down = client.post("/api/playground", json={"url": url, "path": "/health"})
    assert down.status_code == 502
    assert "k-123" not in caplog.text
    assert "secret text" not in caplog.text
