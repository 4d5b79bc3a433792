"""Hostile inputs against a served tiny model of every task: never a 5xx, always the documented 4xx.

Each registered task's model (two training steps, saved as a run's ``best/``) is served in process and
sent lone surrogates, a body over ``max_body_bytes``, a text under it but far over ``max_input_tokens``,
malformed JSON, bytes that are not UTF-8, wrong types and empty or blank inputs, at ``/v1/predict`` or,
for a generating task, at ``/v1/completions`` and ``/v1/chat/completions``. Rejected text is a 422
whose error names the field; an oversized body is a 413; afterwards the server still answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from served_models import ArtifactCache, is_generating, records_of, serve, served_inputs
from tunelab.inference.artifact import Artifact, load_artifact
from tunelab.tasks import TASKS

BODY_LIMIT = 1_048_576  # the default max_body_bytes
HUGE = "good " * 230_000  # ~1.15 MB: over the body limit
BIG = "good " * 190_000  # ~0.95 MB: under it, far over max_input_tokens


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path_factory.mktemp("served-inputs"), tiny_backbone_dir)


Case = tuple[str, str, Any, int, str | None]  # (name, route, JSON value or raw bytes, status, field)


def predict_cases(art: Artifact) -> list[Case]:
    """Hostile ``/v1/predict`` bodies; ``wrap(text)`` puts a text where the task reads one."""
    paired = art.task.input_fields != ("text",)

    def wrap(text: str) -> Any:
        return {"question": "what was good", "context": text} if paired else text

    return [
        ("surrogate", "/v1/predict", {"inputs": wrap("\ud800")}, 422, "inputs"),
        ("surrogate-in-list", "/v1/predict", {"inputs": [wrap("fine"), wrap("a\udfffb")]}, 422, "inputs"),
        ("huge-body", "/v1/predict", {"inputs": wrap(HUGE)}, 413, None),
        ("big-text", "/v1/predict", {"inputs": wrap(BIG)}, 422, "inputs"),
        ("malformed-json", "/v1/predict", b'{"inputs": "good', 422, None),
        ("not-utf8", "/v1/predict", b'{"inputs": "\xff\xfe good"}', 400, None),
        ("number", "/v1/predict", {"inputs": 5}, 422, "inputs"),
        ("numbers", "/v1/predict", {"inputs": [1, 2]}, 422, "inputs"),
        ("null", "/v1/predict", {"inputs": None}, 422, "inputs"),
        ("object", "/v1/predict", {"inputs": {"a": 1}}, 422, "inputs"),
        ("list-body", "/v1/predict", [wrap("good")], 422, None),
        ("string-body", "/v1/predict", "good", 422, None),
        ("typo-key", "/v1/predict", {"input": wrap("good")}, 422, "input"),
        ("empty", "/v1/predict", {"inputs": wrap("")}, 422, "inputs"),
        ("blank", "/v1/predict", {"inputs": wrap(" \t\n ")}, 422, "inputs"),
        ("empty-list", "/v1/predict", {"inputs": []}, 422, "inputs"),
        ("blank-in-list", "/v1/predict", {"inputs": [wrap("good"), wrap("  ")]}, 422, "inputs"),
    ]


def generation_cases(model: str) -> list[Case]:
    """Hostile completion and chat bodies."""

    def chat(content: Any, **extra: Any) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 16, **extra}

    def completion(prompt: Any, **extra: Any) -> dict[str, Any]:
        return {"model": model, "prompt": prompt, "max_tokens": 16, **extra}

    c, m = "/v1/completions", "/v1/chat/completions"
    return [
        ("surrogate-prompt", c, completion("\ud800"), 422, "prompt"),
        ("surrogate-chat", m, chat("a\udfffb"), 422, "messages"),
        ("huge-prompt", c, completion(HUGE), 413, None),
        ("huge-chat", m, chat(HUGE), 413, None),
        ("big-prompt", c, completion(BIG), 422, "prompt"),
        ("big-chat", m, chat(BIG), 422, "messages"),
        ("malformed-json", c, b'{"prompt": "good', 422, None),
        ("malformed-json-chat", m, b'{"messages": [', 422, None),
        ("not-utf8", c, b'{"prompt": "\xff\xfe good", "max_tokens": 16}', 400, None),
        ("number-prompt", c, completion(5), 422, "prompt"),
        ("null-prompt", c, completion(None), 422, "prompt"),
        ("string-messages", m, {"model": model, "messages": "hi", "max_tokens": 16}, 422, "messages"),
        ("message-without-content", m, {"model": model, "messages": [{"role": "user"}]}, 422, "messages"),
        ("number-content", m, chat(7), 422, "messages"),
        ("string-max-tokens", c, completion("good", max_tokens="many"), 422, "max_tokens"),
        ("negative-max-tokens", c, completion("good", max_tokens=-1), 422, "max_tokens"),
        ("string-temperature", m, chat("good", temperature="hot"), 422, "temperature"),
        ("list-body", c, [completion("good")], 422, None),
        ("empty-prompt", c, completion(""), 422, "prompt"),
        ("blank-prompt", c, completion(" \n\t"), 422, "prompt"),
        ("empty-messages", m, {"model": model, "messages": [], "max_tokens": 16}, 422, "messages"),
        ("blank-content", m, chat("   "), 422, "messages"),
    ]


def send(client: TestClient, route: str, body: Any) -> Any:
    if isinstance(body, bytes):
        return client.post(route, content=body, headers={"Content-Type": "application/json"})
    return client.post(route, content=json.dumps(body), headers={"Content-Type": "application/json"})


def problem(client: TestClient, case: Case) -> str | None:
    """What is wrong with the answer to ``case``, or None."""
    name, route, body, status, field = case
    response = send(client, route, body)
    if response.status_code != status:
        return f"{name}: {response.status_code} (want {status}) {response.text[:160]}"
    error = response.json().get("error", {})
    if field is not None and field not in f"{error.get('param')} {error.get('message')}":
        return f"{name}: {status} does not name {field!r}: {error}"
    return None


VALID: dict[str, Callable[[Artifact, str], tuple[str, Any]]] = {
    "predict": lambda art, model: ("/v1/predict", {"inputs": served_inputs(art, records_of(art)[:1])}),
    "generate": lambda art, model: ("/v1/completions", {"model": model, "prompt": "good", "max_tokens": 16}),
}


@pytest.mark.parametrize("task", TASKS.names())
def test_hostile_inputs_get_the_documented_4xx_and_never_a_5xx(saved: ArtifactCache, task: str):
    path = saved.run(task, "full")
    art = load_artifact(path)
    with serve(path) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        kind = "generate" if is_generating(art) else "predict"
        cases = generation_cases(model) if kind == "generate" else predict_cases(art)
        problems = [p for case in cases if (p := problem(client, case))]
        route, body = VALID[kind](art, model)
        after = send(client, route, body)
        assert after.status_code == 200, after.text  # the server still answers
    assert not problems, "\n".join(problems)
    assert len(cases) > 15
    assert len(BIG.encode()) < BODY_LIMIT < len(HUGE.encode())
