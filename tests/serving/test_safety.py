"""The safety gate on generated replies: a tiny classification run judges a tiny Llama's replies."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tunelab.errors import ConfigError
from tunelab.inference.predict import predict_records
from tunelab.io import read_yaml
from tunelab.serving.app import create_app
from tunelab.serving.predictor import Predictor, load_predictor
from tunelab.serving.safety import SafetyGate, load_gate
from tunelab.serving.settings import SafetySettings, ServeSettings, load_settings
from tunelab.serving.workers import worker_environment

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"messages": [{"role": "user", "content": "hello the movie"}], "max_tokens": 12, "temperature": 0}
REFUSAL = "I cannot send that."


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path) -> Predictor:
    return load_predictor(str(tiny_llama_dir))


@pytest.fixture
def run(classifier_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The classifier run, named relative to its parent dir as working directory (it must be inside)."""
    monkeypatch.chdir(classifier_dir.parent)
    return Path(classifier_dir.name)


def gate(run: Path, threshold: float) -> SafetyGate:
    """Threshold 0 blocks every reply; 1 blocks none (the random head's probabilities stay below 1)."""
    return load_gate(SafetySettings(run=run, block_labels=["negative"], threshold=threshold, refusal=REFUSAL))


@contextmanager
def serving(predictor: Predictor) -> Iterator[TestClient]:
    settings = ServeSettings(model_dir="tiny", allow_unauthenticated=True, max_new_tokens=24)
    with TestClient(create_app(settings, predictor)) as client:
        yield client


def safety_counts(client: TestClient) -> dict[str, float]:
    """The gate's counter samples from /metrics: ``checked`` and ``blocked:<label>``."""
    counts = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("tunelab_safety_checked_total"):
            counts["checked"] = float(line.split()[-1])
        elif line.startswith("tunelab_safety_blocked_total"):
            label = line.split('label="')[1].split('"')[0]
            counts[f"blocked:{label}"] = float(line.split()[-1])
    return counts


def leaked(reply: str, text: str) -> bool:
    """Whether ``reply`` is in ``text`` as it is or JSON-escaped (a random model's bytes often are)."""
    return reply in text or json.dumps(reply)[1:-1] in text


@pytest.fixture(scope="module")
def unchecked(lm: Predictor) -> dict[str, str]:
    """What the model replies without a gate: the chat reply and the completion."""
    with serving(lm) as client:
        chat = client.post("/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]["content"]
        text = client.post(
            "/v1/completions", json={"prompt": "the movie", "max_tokens": 12, "temperature": 0}
        )
    replies = {"chat": chat, "completion": text.json()["choices"][0]["text"]}
    assert all(len(reply.strip()) > 3 for reply in replies.values())  # something a leak would show
    return replies


def test_blocking_gate_answers_the_refusal_and_counts_it(
    lm: Predictor, run: Path, unchecked: dict[str, str], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    with serving(replace(lm, gate=gate(run, 0.0))) as client:
        body = client.post("/v1/chat/completions", json=CHAT).json()
        completion = client.post("/v1/completions", json={"prompt": "the movie", "max_tokens": 12}).json()
        counts = safety_counts(client)
    [choice] = body["choices"]
    assert choice["message"]["content"] == REFUSAL
    assert choice["finish_reason"] == "content_filter"
    assert choice["content_filter"]["label"] == "negative"
    assert 0 < choice["content_filter"]["score"] < 1
    assert completion["choices"][0]["text"] == REFUSAL
    assert completion["choices"][0]["finish_reason"] == "content_filter"
    assert body["usage"]["completion_tokens"] == 12  # the decoding that was done is still reported
    assert counts == {"checked": 2.0, "blocked:negative": 2.0}
    assert '"safety": "blocked"' in caplog.text  # the block is logged ...
    assert not leaked(unchecked["chat"], caplog.text)  # ... without the reply
    assert not leaked(unchecked["completion"], caplog.text)


def test_streaming_never_sends_blocked_text(lm: Predictor, run: Path, unchecked: dict[str, str]):
    with (
        serving(replace(lm, gate=gate(run, 0.0))) as client,
        client.stream("POST", "/v1/chat/completions", json=CHAT | {"stream": True}) as response,
    ):
        raw = "".join(response.iter_text())
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    sent = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert sent == REFUSAL
    assert events[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert events[-1]["choices"][0]["content_filter"]["label"] == "negative"
    assert not leaked(unchecked["chat"], raw)
    assert raw.rstrip().endswith("data: [DONE]")


def test_passing_gate_returns_the_generated_reply_unchanged(
    lm: Predictor, run: Path, unchecked: dict[str, str]
):
    with serving(replace(lm, gate=gate(run, 1.0))) as client:
        [choice] = client.post("/v1/chat/completions", json=CHAT).json()["choices"]
        with client.stream("POST", "/v1/chat/completions", json=CHAT | {"stream": True}) as response:
            raw = "".join(response.iter_text())
        counts = safety_counts(client)
    assert choice["message"]["content"] == unchecked["chat"]
    assert choice["finish_reason"] == "length"
    assert choice["content_filter"] is None
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == unchecked["chat"]
    assert counts == {"checked": 2.0}


def test_decoding_and_the_gate_share_one_request_timeout(
    lm: Predictor, run: Path, monkeypatch: pytest.MonkeyPatch
):
    """Each stage alone fits in request_timeout_s, both together do not: the request gets its 504."""
    quick_gate = gate(run, 1.0)
    judge = quick_gate.judge
    assert lm.lm is not None
    hook = lm.lm.register_forward_pre_hook(lambda module, args: time.sleep(0.05))  # >= 13 calls: 0.65 s
    settings = ServeSettings(
        model_dir="tiny", allow_unauthenticated=True, max_new_tokens=24, request_timeout_s=1.0
    )
    try:
        with TestClient(create_app(settings, replace(lm, gate=quick_gate))) as client:
            answered = client.post("/v1/chat/completions", json=CHAT)  # decoding alone fits
            slow = lambda *args, **kw: (time.sleep(0.6), judge(*args, **kw))[1]  # noqa: E731
            monkeypatch.setattr(quick_gate, "judge", slow)  # and so does the gate alone
            started = time.monotonic()
            timed_out = client.post("/v1/chat/completions", json=CHAT)
            elapsed = time.monotonic() - started
    finally:
        hook.remove()
    assert answered.status_code == 200
    assert timed_out.status_code == 504
    assert elapsed < 1.5  # answered at the shared deadline, not after each stage's own timeout


def test_unknown_block_label_fails_at_startup_naming_the_key(tiny_llama_dir: Path, run: Path):
    safety = SafetySettings(run=run, block_labels=["negative", "toxic"])
    with pytest.raises(ConfigError, match=r"safety\.block_labels: \['toxic'\] are not labels of .*negative"):
        load_predictor(str(tiny_llama_dir), safety=safety)


def test_safety_settings_refuse_a_run_outside_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"safety\.run: .*leaves the working directory"):
        load_settings(model_dir="m", safety={"run": "../elsewhere", "block_labels": ["negative"]})
    with pytest.raises(ConfigError, match=r"safety\.block_labels: .*at least 1 item"):
        load_settings(model_dir="m", safety={"run": "runs/x", "block_labels": []})


def test_a_model_that_generates_nothing_refuses_a_gate(classifier_dir: Path, run: Path):
    with pytest.raises(ConfigError, match=r"safety: .* generates no replies"):
        load_predictor(str(classifier_dir), safety=SafetySettings(run=run, block_labels=["negative"]))


def test_long_reply_is_judged_in_windows_of_the_run_length(run: Path):
    judge = gate(run, 0.5)
    text = " ".join(["the movie was very good"] * 30)  # far beyond the run's max_length 32
    windows = judge.windows(text)
    tokens = [len(judge.run.tokenizer(w)["input_ids"]) for w in windows]
    assert len(windows) > 2
    assert max(tokens) <= 32
    assert " ".join(windows).split() == text.split()
    [verdict] = judge.judge([text])
    alone = [predict_records(judge.run, [{"text": w}], 1)[0]["probabilities"]["negative"] for w in windows]
    assert verdict.score == pytest.approx(max(alone), abs=1e-5)


def test_windows_starting_inside_a_word_still_fit_the_run(run: Path):
    """A window cut inside a word tokenises into more pieces on its own; none may be truncated away."""
    judge = gate(run, 0.5)
    tokenizer = judge.run.tokenizer
    text = " ".join(["the undeniably unbelievable hyperparameterization movie"] * 12)
    pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(pieces) > 3 * 32  # several windows, words of many pieces in the tiny vocabulary
    windows = judge.windows(text)
    counts = [len(tokenizer(w)["input_ids"]) for w in windows]
    assert max(counts) <= 32  # nothing past the run's max_length, so the run reads every window whole
    assert "".join(windows).replace(" ", "") == text.replace(" ", "")


class CountingTokenizer:
    """The run's tokenizer, counting its calls (attributes pass through)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def re_tokenised_windows(tokenizer: Any, text: str, size: int) -> list[str]:
    """The gate's windows before they were cut from one tokenisation: each candidate tokenised again."""
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    out, start = [], 0
    while start < len(spans):
        end = min(start + size, len(spans))
        while end - start > 1:
            window = text[spans[start][0] : spans[end - 1][1]]
            if len(tokenizer(window, add_special_tokens=False)["input_ids"]) <= size:
                break
            end -= 1
        out.append(text[spans[start][0] : spans[end - 1][1]])
        start = end
    return out


def test_windows_come_from_one_tokenisation_and_equal_the_re_tokenised_ones(run: Path):
    judge = gate(run, 0.5)
    tokenizer = judge.run.tokenizer
    counting = CountingTokenizer(tokenizer)
    judge = replace(judge, run=replace(judge.run, tokenizer=counting))
    text = " ".join(["the movie was very good and the plot was fine"] * 40)
    windows = judge.windows(text)
    assert counting.calls == 1  # one tokenisation of the reply decides every cut
    old = re_tokenised_windows(tokenizer, text, 32 - tokenizer.num_special_tokens_to_add())
    assert len(windows) > 5
    assert [tokenizer(w)["input_ids"] for w in windows] == [tokenizer(w)["input_ids"] for w in old]


def test_each_window_tokenises_to_its_slice_of_the_reply(run: Path):
    """Cut where words start, a window reads on its own as in the reply (no ``##bly`` -> ``b ##ly``)."""
    judge = gate(run, 0.5)
    tokenizer = judge.run.tokenizer
    text = " ".join(["the undeniably unbelievable hyperparameterization movie"] * 12)
    windows = judge.windows(text)
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in windows]
    assert len(windows) > 3
    assert max(map(len, pieces)) <= 32 - tokenizer.num_special_tokens_to_add()
    assert [token for piece in pieces for token in piece] == tokenizer(text, add_special_tokens=False)[
        "input_ids"
    ]


def test_a_word_longer_than_a_window_is_cut_inside_and_every_piece_still_fits(run: Path):
    judge = gate(run, 0.5)
    tokenizer = judge.run.tokenizer
    giant = "undeniablyunbelievable" * 3  # one word of more pieces than a window
    assert len(tokenizer(giant, add_special_tokens=False)["input_ids"]) > 32
    text = f"the movie {giant} was bad"
    windows = judge.windows(text)
    counts = [len(tokenizer(w)["input_ids"]) for w in windows]
    assert len(windows) > 2
    assert max(counts) <= 32
    assert "".join(windows).replace(" ", "") == text.replace(" ", "")


def test_workers_receive_the_safety_settings(run: Path, monkeypatch: pytest.MonkeyPatch):
    settings = load_settings(model_dir="m", safety={"run": str(run), "block_labels": ["negative"]})
    for key, value in worker_environment(settings, threads=1).items():
        monkeypatch.setenv(key, value)
    assert load_settings().safety == settings.safety


def test_brand_safety_example_validates(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    example = ROOT / "examples" / "apps" / "customer_service" / "brand_safety_gate.yaml"
    settings = load_settings(model_dir="runs/sft-smollm2", safety=read_yaml(example, "safety settings"))
    assert settings.safety is not None
    assert settings.safety.block_labels == ["negative"]
