"""A tiny random Llama behind the OpenAI-compatible routes, driven by the official ``openai`` client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import ServeSettings

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello the movie"}]


@pytest.fixture(scope="module")
def lm_app(tiny_llama_dir: Path, api_key: str) -> FastAPI:
    predictor = load_predictor(str(tiny_llama_dir))
    assert predictor.generates
    assert predictor.schema is None
    assert predictor.encoder is None
    settings = ServeSettings(model_dir="tiny", api_key=api_key, max_new_tokens=24, max_input_tokens=64)
    return create_app(settings, predictor)


@pytest.fixture(scope="module")
def lm_url(lm_app: FastAPI, live: Any) -> Iterator[str]:
    with live(lm_app) as base:
        yield base


@pytest.fixture
def name(tiny_llama_dir: Path) -> str:
    """The served model's id: what ``model`` must say (any other name is a 404)."""
    return tiny_llama_dir.name


@pytest.fixture
def client(lm_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lm_url + "/v1", api_key=api_key, max_retries=0)


def test_openai_client_chat_plain_and_streaming_agree(client: openai.OpenAI, name: str):
    plain = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=12, temperature=0)
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 12
    assert plain.usage.prompt_tokens > 5
    assert plain.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=name,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12


def test_metrics_report_decode_speed_per_request(client: openai.OpenAI, name: str, lm_url: str, api_key: str):
    before = _speed_count(lm_url, api_key)
    client.completions.create(model=name, prompt="the movie", max_tokens=8, temperature=0)
    list(client.completions.create(model=name, prompt="a", max_tokens=8, temperature=0, stream=True))
    assert _speed_count(lm_url, api_key) == before + 2  # plain and streamed both observed


def _speed_count(url: str, api_key: str) -> float:
    text = httpx.get(url + "/metrics", headers={"X-API-Key": api_key}).text
    found = re.search(r"^tunelab_generation_tokens_per_second_count (\S+)$", text, re.M)
    assert found, text
    return float(found[1])


def test_stop_string_cuts_output_plain_and_streaming(client: openai.OpenAI, name: str):
    full = client.completions.create(model=name, prompt="the movie", max_tokens=16, temperature=0)
    text = full.choices[0].text
    # A word from the middle of the greedy output (the random model also emits stray bytes, which
    # transformers' token-level stop matching cannot see).
    stop = [w for w in re.findall(r"[a-z]{2,}", text) if text.index(w) > 0][0]
    cut = client.completions.create(model=name, prompt="the movie", max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 16
    streamed = client.completions.create(
        model=name, prompt="the movie", max_tokens=16, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text


def test_sampling_is_reproducible_with_a_seed(client: openai.OpenAI, name: str):
    def sample(seed: int) -> str:
        out = client.completions.create(model=name, prompt="a", max_tokens=10, temperature=1.5, seed=seed)
        return out.choices[0].text

    assert sample(1) == sample(1)
    assert len({sample(s) for s in range(4)}) > 1


def test_models_list_and_limits(client: openai.OpenAI, lm_url: str, api_key: str, name: str):
    assert [m.id for m in client.models.list().data] == [name]
    with pytest.raises(openai.UnprocessableEntityError, match="max_new_tokens=24"):
        client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=25)
    with pytest.raises(openai.UnprocessableEntityError, match="max_input_tokens=64"):
        client.completions.create(model=name, prompt="the movie " * 60, max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=lm_url + "/v1", api_key="wrong", max_retries=0).models.list()
    status = httpx.post(lm_url + "/v1/predict", json={"inputs": "x"}, headers={"X-API-Key": api_key})
    assert status.status_code == 404  # no task head: the route does not exist for a causal LM


def _requests() -> list[dict[str, Any]]:
    """Six completions of different prompts, lengths and decodings (greedy and seeded sampling)."""
    prompts = ["the movie", "a long and winding plot about nothing", "hi", "one two three four", "ok", "why"]
    return [
        {"prompt": p, "max_tokens": 6 + 3 * i, "temperature": 0 if i % 2 else 1.0, "seed": i}
        for i, p in enumerate(prompts)
    ]


def _batch_rows(url: str, api_key: str) -> tuple[float, float]:
    """(rows decoded summed over steps, steps) from the generate queue's batch-size histogram."""
    text = httpx.get(url + "/metrics", headers={"X-API-Key": api_key}).text
    found = re.findall(r'^tunelab_batch_size_(sum|count)\{queue="generate"\} (\S+)$', text, re.M)
    values = {part: float(value) for part, value in found}
    return values["sum"], values["count"]


def _concurrently(client: openai.OpenAI, name: str) -> list[str]:
    with ThreadPoolExecutor(len(_requests())) as pool:
        replies = pool.map(lambda body: client.completions.create(model=name, **body), _requests())
        return [reply.choices[0].text for reply in replies]


def test_concurrent_requests_decode_together_and_reply_as_each_would_alone(
    client: openai.OpenAI, name: str, lm_url: str, api_key: str
):
    alone = [client.completions.create(model=name, **body).choices[0].text for body in _requests()]
    rows, steps = _batch_rows(lm_url, api_key)
    together = _concurrently(client, name)
    more_rows, more_steps = _batch_rows(lm_url, api_key)
    assert together == alone
    assert (more_rows - rows) / (more_steps - steps) > 1.5  # requests shared decode steps


def test_decode_batch_size_one_decodes_one_request_at_a_time(
    tiny_llama_dir: Path, api_key: str, live: Any, name: str, client: openai.OpenAI
):
    settings = ServeSettings(model_dir="tiny", api_key=api_key, max_new_tokens=24, decode_batch_size=1)
    with live(create_app(settings, load_predictor(str(tiny_llama_dir)))) as url:
        one_at_a_time = openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0)
        replies = _concurrently(one_at_a_time, name)
        rows, steps = _batch_rows(url, api_key)
    assert rows == steps == len(_requests())  # one request per model call, decoded to its end
    assert replies == _concurrently(client, name)
