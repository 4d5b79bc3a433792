"""The assistant app behind ``/v1/chat/completions``: tiny intent, answer-selection and generator runs.

Each path (stored answer, generator, handoff) answers what its part gives directly: the reply is the
answer-selection run's best stored answer, the generator's greedy reply, or the handoff message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from test_process import free_port, wait_until_ready  # tests/serving is on sys.path (rootdir import)
from typer.testing import CliRunner

from served_models import ArtifactCache, train_and_save
from toy_tasks import classification, toy_rows, write_csv
from tunelab.apps.assistant import Assistant, Decision, load_assistant, load_settings
from tunelab.apps.replies import generate_replies, score_replies
from tunelab.cli import app as cli
from tunelab.errors import ConfigError
from tunelab.inference.artifact import load_artifact
from tunelab.inference.generate import GenerationJob, generate
from tunelab.inference.predict import predict_records
from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import SafetySettings, ServeSettings
from tunelab.tasks.causal_lm import chat_prompt

MESSAGE = "the movie was good and lovely"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> dict[str, Path]:
    """The answer-selection run, and an intent run trained until its cue words split the intents."""
    root = tmp_path_factory.mktemp("assistant")
    intent_work = root / "intent"
    intent_work.mkdir()
    _, intent = train_and_save(
        intent_work,
        tiny_backbone_dir,
        classification(intent_work),
        [{"name": "full"}],
        max_steps=120,
        lr=3e-3,
    )
    return {"intent": intent, "answers": ArtifactCache(root, tiny_backbone_dir).run("retrieval", "full")}


@pytest.fixture(scope="module")
def write_settings(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("settings")

    def write(name: str, **values: Any) -> Path:
        path = root / f"{name}_app.yaml"
        base = {"intent_run": str(runs["intent"]), "answers_run": str(runs["answers"]), "top_k": 3}
        path.write_text(yaml.safe_dump(base | values), encoding="utf-8")
        return path

    return write


def _serve(settings_file: Path, api_key: str, live: Any) -> Iterator[httpx.Client]:
    predictor = load_predictor(str(settings_file))
    app = create_app(
        ServeSettings(model_dir=str(settings_file), api_key=api_key, max_new_tokens=8), predictor
    )
    with live(app) as base, httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api_key}"}) as c:
        yield c


@pytest.fixture(scope="module")
def answering(write_settings: Any, api_key: str, live: Any) -> Iterator[httpx.Client]:
    """Every message clears the thresholds: the best stored answer replies."""
    yield from _serve(write_settings("answering", min_answer_score=-1.0), api_key, live)


def _chat(client: httpx.Client, content: str = MESSAGE, **extra: Any) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": content}], **extra},
    )


def test_stored_answer_path_equals_the_parts_run_directly(answering: httpx.Client, runs: dict[str, Path]):
    body = _chat(answering).json()
    intent = predict_records(load_artifact(runs["intent"]), [{"text": MESSAGE}], 8)[0]
    hits = predict_records(load_artifact(runs["answers"]), [{"text": MESSAGE, "top_k": 3}], 8)[0]["hits"]
    routing = body["assistant"]
    assert routing["path"] == "answer"
    assert body["choices"][0]["message"]["content"] == hits[0]["text"]
    assert routing["intent"] == intent["label"]
    assert routing["intent_confidence"] == pytest.approx(intent["probabilities"][intent["label"]], abs=1e-6)
    assert [c["text"] for c in routing["candidates"]] == [h["text"] for h in hits]
    assert routing["answer_score"] == pytest.approx(hits[0]["score"], abs=1e-6)
    assert body["object"] == "chat.completion"
    assert body["usage"]["prompt_tokens"] > 0


def test_only_the_chat_route_is_served(answering: httpx.Client):
    assert [m["id"] for m in answering.get("/v1/models").json()["data"]] == ["assistant"]
    assert answering.post("/v1/completions", json={"prompt": "hi"}).status_code == 404
    assert answering.post("/v1/predict", json={"inputs": "hi"}).status_code == 404
    assert answering.get("/ready").json()["status"] == "ready"


def test_route_needs_the_api_key(answering: httpx.Client):
    response = httpx.post(
        f"{answering.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": MESSAGE}]},
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream": True}, "stream"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, None),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages[0].content"),
        ({"model": "other"}, "model"),
    ],
)
def test_unanswerable_requests_name_the_field(
    answering: httpx.Client, extra: dict[str, Any], param: str | None
):
    response = answering.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": MESSAGE}]} | extra
    )
    assert response.status_code in (404, 422)
    assert response.json()["error"]["param"] == (param or "messages[1].role")


def test_below_the_thresholds_the_generator_answers(
    write_settings: Any, tiny_llama_dir: Path, api_key: str, live: Any
):
    settings = write_settings("generating", min_answer_score=1.0, generator_run=str(tiny_llama_dir))
    messages = [{"role": "user", "content": MESSAGE}]
    for client in _serve(settings, api_key, live):
        body = _chat(client, max_tokens=6, temperature=0).json()
        assert body["assistant"]["path"] == "generator"
        lm = load_predictor(str(tiny_llama_dir))
        job = GenerationJob(chat_prompt(lm.tokenizer, messages), 6, temperature=0, add_special_tokens=False)
        direct = generate(lm.lm, lm.tokenizer, job)
        assert body["choices"][0]["message"]["content"] == direct.text
        assert body["usage"]["completion_tokens"] == direct.completion_tokens


def test_handoff_message_without_a_generator_and_for_handoff_intents(
    write_settings: Any, runs: dict[str, Path]
):
    low = load_assistant(
        load_settings(write_settings("low", min_answer_score=1.0, handoff_message="a human"))
    )
    intents = load_artifact(runs["intent"]).labels
    every = load_assistant(
        load_settings(write_settings("every", min_answer_score=-1.0, handoff_intents=intents))
    )
    for assistant in (low, every):
        [decision] = assistant.decide([MESSAGE])
        assert (decision.path, decision.reply) == ("handoff", assistant.settings.handoff_message)
    assert [d.path for d in low.decide([MESSAGE, "a dull plot"])] == ["handoff", "handoff"]


def test_batched_decisions_equal_one_at_a_time(write_settings: Any):
    assistant: Assistant = load_assistant(load_settings(write_settings("batch", min_answer_score=0.0)))
    texts = [MESSAGE, "a dull plot", "quite a bad scene with the actor"]
    batched = assistant.decide(texts)
    single = [assistant.decide([text])[0] for text in texts]
    for b, s in zip(batched, single, strict=True):
        assert (b.intent, b.path, b.reply) == (s.intent, s.path, s.reply)
        assert b.answer_score == pytest.approx(s.answer_score, abs=1e-5)


def test_unknown_handoff_intent_is_refused(write_settings: Any):
    with pytest.raises(ConfigError, match=r"handoff_intents: \['billing'\] are not intents"):
        load_assistant(load_settings(write_settings("bad", handoff_intents=["billing"])))


def test_swapped_runs_are_refused_naming_the_key(write_settings: Any, runs: dict[str, Path]):
    swapped = write_settings("swapped", intent_run=str(runs["answers"]), answers_run=str(runs["intent"]))
    with pytest.raises(ConfigError, match=r"intent_run: .* predicts no label probabilities"):
        load_assistant(load_settings(swapped))


def test_safety_gate_judges_generated_replies_only(
    write_settings: Any, tiny_llama_dir: Path, classifier_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """A gate that blocks everything replaces the generator's reply; stored answers are not judged."""
    monkeypatch.chdir(classifier_dir.parent)  # the gate's run must be inside the working directory
    safety = SafetySettings(run=Path(classifier_dir.name), block_labels=["negative"], threshold=0.0)
    for name, score, path in [("gated-gen", 1.0, "generator"), ("gated-answer", -1.0, "answer")]:
        settings_file = write_settings(name, min_answer_score=score, generator_run=str(tiny_llama_dir))
        predictor = load_predictor(str(settings_file), safety=safety)
        app = create_app(
            ServeSettings(model_dir="a", allow_unauthenticated=True, max_new_tokens=8), predictor
        )
        with TestClient(app) as client:
            body = _chat(client, max_tokens=6, temperature=0).json()
            checked = [
                m
                for m in client.get("/metrics").text.splitlines()
                if m.startswith("tunelab_safety_checked_total")
            ]
        [choice] = body["choices"]
        assert body["assistant"]["path"] == path
        if path == "generator":
            assert (choice["message"]["content"], choice["finish_reason"]) == (
                safety.refusal,
                "content_filter",
            )
            assert checked == ["tunelab_safety_checked_total 1.0"]
        else:
            assert choice["finish_reason"] == "stop"
            assert choice["content_filter"] is None
            assert checked == ["tunelab_safety_checked_total 0.0"]


def _three_paths(write_settings: Any) -> tuple[dict[str, str], dict[str, Decision]]:
    """A message per path, as the tiny runs score them, and their decisions at no threshold.

    One message's intent is handed off; of the messages with other intents the best-scored is answered
    from the store and the worst-scored generated.
    """
    probe = load_assistant(load_settings(write_settings("probe", min_answer_score=-1.0)))
    pool = list(dict.fromkeys(text for text, _ in toy_rows(24, seed=5)))
    decided = dict(zip(pool, probe.decide(pool), strict=True))
    handoff = pool[0]
    others = [t for t in pool if decided[t].intent != decided[handoff].intent]
    assert len(others) >= 2, "the tiny intent run names one intent for every message of the pool"
    others.sort(key=lambda t: decided[t].answer_score)
    return {"handoff": handoff, "answer": others[-1], "generator": others[0]}, decided


def test_tunelab_serve_of_the_app_file_answers_generates_and_hands_off(
    write_settings: Any, tiny_llama_dir: Path, tmp_path: Path
):
    """``tunelab serve`` of an app file, in its own process, takes each path; assistant-eval scores them."""
    texts, decided = _three_paths(write_settings)
    low, high = (decided[texts[p]].answer_score for p in ("generator", "answer"))
    assert low < high
    settings = write_settings(
        "served",
        min_answer_score=(low + high) / 2,
        handoff_intents=[decided[texts["handoff"]].intent],
        generator_run=str(tiny_llama_dir),
        handoff_message="A colleague will answer you.",
    )
    port = free_port()
    command = [sys.executable, "-c", "from tunelab.cli import app; app()", "serve", str(settings)]
    with (tmp_path / "server.log").open("w") as log:  # a file: a full pipe would stall the server
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**os.environ, "TUNELAB_SERVE_API_KEY": "k"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, proc)
        with httpx.Client(base_url=url, headers={"X-API-Key": "k"}, timeout=60) as client:
            served = {p: _chat(client, t, max_tokens=6, temperature=0).json() for p, t in texts.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    replies = {p: body["choices"][0]["message"]["content"] for p, body in served.items()}
    assert {p: body["assistant"]["path"] for p, body in served.items()} == {p: p for p in texts}
    right = decided[texts["answer"]].candidates[0]["text"]
    assert replies["answer"] == right
    assert replies["handoff"] == "A colleague will answer you."
    lm = load_predictor(str(tiny_llama_dir))
    [generated] = generate_replies(lm.lm, lm.tokenizer, [texts["generator"]], 6, 4)
    assert replies["generator"] == generated  # the evaluation prompts and decodes as the server does

    answers = write_csv(tmp_path / "answers.csv", [(t, right) for t in texts.values()], ("query", "positive"))
    intents = write_csv(tmp_path / "intents.csv", toy_rows(8, seed=6))
    args = ["apps", "assistant-eval", str(settings), "--intent-data", str(intents)]
    result = CliRunner().invoke(cli, [*args, "--answers-data", str(answers), "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["routes"] == {"answer": 1, "generator": 1, "handoff": 1}
    quality = out["replies"]
    assert quality["all"]["questions"] == 3
    assert quality["answer"]["sent"] == {"chrf": 100.0, "exact": 1.0}
    assert quality["handoff"]["sent"] == quality["handoff"]["handoff"]
    assert quality["generator"]["sent"] == quality["generator"]["generator"]
    expected = score_replies([generated], [[right]])["chrf"][0]
    assert quality["generator"]["sent"]["chrf"] == pytest.approx(expected)
