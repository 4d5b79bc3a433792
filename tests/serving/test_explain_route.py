"""``explain: true`` at /v1/predict: same predictions, attributions aligned to the words, capped inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import BertForTokenClassification, BertTokenizerFast

from tunelab.models.artifact import save_model
from tunelab.models.run_info import RunInfo
from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import ServeSettings

KEY = "explain-key-0123456789"
TAGS = ["O", "B-pos", "I-pos", "B-neg", "I-neg"]
TEXTS = ["the movie was good and lovely", "a dull plot, <b>awful</b>"]


@pytest.fixture(scope="module")
def tagger_dir(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NER artifact on the tiny BERT whose head tags every word B-pos: each word is an entity."""
    out = tmp_path_factory.mktemp("tiny-ner") / "model"
    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(
        tiny_backbone_dir, num_labels=len(TAGS), id2label=dict(enumerate(TAGS))
    )
    with torch.no_grad():
        model.classifier.bias[TAGS.index("B-pos")] = 10.0
    info = RunInfo(task="token_classification", task_params={"max_length": 32}, labels=TAGS)
    save_model(model, BertTokenizerFast.from_pretrained(tiny_backbone_dir), out, info)
    return out


def _client(path: Path, **settings: Any) -> Iterator[TestClient]:
    app = create_app(ServeSettings(model_dir=str(path), api_key=KEY, **settings), load_predictor(str(path)))
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        yield client


@pytest.fixture(scope="module")
def classifier_client(classifier_dir: Path) -> Iterator[TestClient]:
    yield from _client(classifier_dir, max_explain_items=2, explain_steps=8)


@pytest.fixture(scope="module")
def tagger_client(tagger_dir: Path) -> Iterator[TestClient]:
    yield from _client(tagger_dir, explain_steps=8)


def _aligned(text: str, explanation: dict[str, Any]) -> None:
    for word in explanation["words"]:
        assert text[word["start"] : word["end"]] == word["text"]


@pytest.mark.parametrize("method", ["ig", "rollout"])
def test_classification_explain_keeps_the_prediction_and_aligns_words(classifier_client, method):
    plain = classifier_client.post("/v1/predict", json={"inputs": TEXTS})
    explained = classifier_client.post(
        "/v1/predict", json={"inputs": TEXTS, "explain": True, "explain_method": method}
    )
    assert plain.status_code == explained.status_code == 200, explained.text
    for text, want, got in zip(
        TEXTS, plain.json()["predictions"], explained.json()["predictions"], strict=True
    ):
        assert want["explanations"] is None
        assert got["label"] == want["label"]
        assert got["scores"] == [pytest.approx(s, abs=1e-5) for s in want["scores"]]
        [explanation] = got["explanations"]
        assert explanation["target"] == got["label"]
        assert explanation["method"] == method
        assert explanation["probability"] == pytest.approx(got["score"], abs=1e-5)
        _aligned(text, explanation)
    words = explained.json()["predictions"][1]["explanations"][0]["words"]
    assert [w["text"] for w in words][-5:] == ["awful", "<", "/", "b", ">"]


def test_ner_explains_each_entity_first_word(tagger_client):
    body = {"inputs": TEXTS[:1], "explain": True}
    plain = tagger_client.post("/v1/predict", json={"inputs": TEXTS[:1]}).json()["predictions"][0]
    got = tagger_client.post("/v1/predict", json=body).json()["predictions"][0]
    assert got["entities"] == plain["entities"]
    assert len(got["entities"]) == 6  # every word is a B-pos entity
    assert [e["word"] for e in got["explanations"]] == [e["word_start"] for e in got["entities"]]
    for explanation in got["explanations"]:
        assert explanation["target"] == "B-pos"
        _aligned(TEXTS[0], explanation)


def test_explained_requests_are_capped(classifier_client):
    body = {"inputs": ["a", "b", "c"], "explain": True}
    response = classifier_client.post("/v1/predict", json=body)
    assert response.status_code == 422
    assert "3 items with explain: true; at most max_explain_items=2" in response.json()["error"]["message"]
    assert classifier_client.post("/v1/predict", json={"inputs": ["a", "b", "c"]}).status_code == 200
