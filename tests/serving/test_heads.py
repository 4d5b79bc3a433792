"""The heads served since "one server, every head": routes follow what the saved model can do.

(``test_every_head.py`` compares every task x saved form with ``tunelab predict``; these pin the
capability choices and the encoder-decoder's decoding rules.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from served_models import ArtifactCache
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import ServeSettings

KEY = "heads-key-0123456789"
TEXTS = ["the movie was good and lovely", "a dull plot"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path_factory.mktemp("heads"), tiny_backbone_dir)


@contextmanager
def serve(path: Path) -> Iterator[TestClient]:
    app = create_app(ServeSettings(model_dir=str(path), api_key=KEY), load_predictor(str(path)))
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        yield client


def routes(client: TestClient) -> set[str]:
    return {getattr(route, "path", "") for route in client.app.routes} & {  # type: ignore[attr-defined]
        "/v1/predict",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/chat/completions",
    }


@pytest.mark.parametrize(
    ("task", "method", "expected"),
    [
        ("embedding_classification", "full", {"/v1/predict", "/v1/embeddings"}),
        ("prompt_classification", "full", {"/v1/predict", "/v1/completions", "/v1/chat/completions"}),
        ("classification", "lora", {"/v1/predict", "/v1/embeddings"}),  # an adapter dir, unmerged
    ],
)
def test_label_heads_answer_predict_like_classification(
    saved: ArtifactCache, task: str, method: str, expected: set[str]
):
    path = saved.run(task, method)
    art = load_artifact(path)
    reference = predict_records(art, [{"text": t} for t in TEXTS], batch_size=len(TEXTS))
    with serve(path) as client:
        assert routes(client) == expected
        response = client.post("/v1/predict", json={"inputs": TEXTS})
    assert response.status_code == 200, response.text
    for got, want in zip(response.json()["predictions"], reference, strict=True):
        assert got["label"] == want["label"]
        assert {s["label"]: s["score"] for s in got["scores"]} == pytest.approx(
            want["probabilities"], abs=1e-5
        )


def test_seq2seq_generates_with_its_run_options_and_refuses_other_decoding(saved: ArtifactCache):
    path = saved.run("seq2seq", "full")
    art = load_artifact(path)
    cap = art.task.generation(art.task_params)["max_new_tokens"]
    [want] = predict_records(art, [{"text": TEXTS[0]}], batch_size=1)
    with serve(path) as client:
        assert routes(client) == {"/v1/completions", "/v1/chat/completions"}
        plain = client.post("/v1/completions", json={"prompt": TEXTS[0]}).json()
        greedy = client.post(
            "/v1/completions", json={"prompt": TEXTS[0], "temperature": 0, "max_tokens": cap}
        )
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": TEXTS[0]}]})
        streamed = client.post("/v1/completions", json={"prompt": TEXTS[0], "stream": True})
        sampled = client.post("/v1/completions", json={"prompt": TEXTS[0], "temperature": 0.7})
        short = client.post("/v1/completions", json={"prompt": TEXTS[0], "max_tokens": cap - 1})
        two = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": TEXTS[0]}]},
        )
    assert plain["choices"][0]["text"] == want["generated"]
    assert greedy.json()["choices"][0]["text"] == want["generated"]
    assert chat.json()["choices"][0]["message"]["content"] == want["generated"]
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == want["generated"]
    assert plain["usage"]["prompt_tokens"] > 0
    for response, param in ((sampled, "temperature"), (short, "max_tokens"), (two, "messages")):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == param


def test_lm_pretrain_fills_its_mask_tokens_like_the_fill_mask_reference(saved: ArtifactCache):
    path = saved.run("lm_pretrain", "full")  # masked LM on the tiny BERT
    art = load_artifact(path)
    texts = ["the movie was [MASK] and [MASK]", "no mask here"]
    with serve(path) as client:
        assert routes(client) == {"/v1/predict", "/v1/embeddings"}
        response = client.post("/v1/predict", json={"inputs": texts})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    enc = art.tokenizer(texts[0], return_tensors="pt")
    with torch.no_grad():
        probs = art.model(**enc).logits[0].softmax(-1)  # (T, V)
    positions = (enc["input_ids"][0] == art.tokenizer.mask_token_id).nonzero()[:, 0]
    assert len(first["fills"]) == len(positions) == 2
    for fills, t in zip(first["fills"], positions, strict=True):
        top = probs[t].topk(5)
        assert [f["token"] for f in fills] == [art.tokenizer.decode([int(i)]).strip() for i in top.indices]
        assert [f["score"] for f in fills] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert second["fills"] == []
