"""QA over HTTP: /v1/predict takes {question, context} pairs and answers spans equal to the CLI path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import BertForQuestionAnswering, BertTokenizerFast

from tunelab.inference.predict import predict_records
from tunelab.models.artifact import save_model
from tunelab.models.run_info import RunInfo
from tunelab.serving.app import create_app
from tunelab.serving.predictor import Predictor, load_predictor
from tunelab.serving.settings import ServeSettings

ITEMS = [
    {"question": "what was good", "context": "the movie was superb and the plot quite dull"},
    {"question": "what was good", "context": " ".join(["the plot was very dull"] * 12 + ["a lovely scene"])},
]


@pytest.fixture(scope="module")
def qa_predictor(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """A tunelab QA artifact (random head, always answers) on the tiny BERT, windows of 24 tokens."""
    out = tmp_path_factory.mktemp("tiny-qa") / "model"
    torch.manual_seed(0)
    model = BertForQuestionAnswering.from_pretrained(tiny_backbone_dir)
    params = {"max_length": 24, "doc_stride": 6, "max_answer_length": 4, "version_2_with_negative": False}
    info = RunInfo(task="qa", task_params=params)
    save_model(model, BertTokenizerFast.from_pretrained(tiny_backbone_dir), out, info)
    predictor = load_predictor(str(out))
    assert predictor.schema is not None
    return predictor


def test_qa_predict_route_matches_cli_path_and_validates_pairs(
    qa_predictor: Predictor, live: Any, api_key: str
) -> None:
    app = create_app(ServeSettings(model_dir="tiny", api_key=api_key), qa_predictor)
    with live(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": api_key}, timeout=30) as client:
        many = client.post("/v1/predict", json={"inputs": ITEMS})
        one = client.post("/v1/predict", json={"inputs": ITEMS[1]})
        missing = client.post("/v1/predict", json={"inputs": {"question": "what was good"}})
        text = client.post("/v1/predict", json={"inputs": "just a text"})
    assert many.status_code == one.status_code == 200, many.text
    preds = many.json()["predictions"]
    reference = predict_records(qa_predictor.artifact, ITEMS, batch_size=1)
    for got, ref, item in zip(preds, reference, ITEMS, strict=True):
        assert set(got) == {"answer", "start", "end", "score", "no_answer"}
        assert got["answer"] == ref["answer"]
        assert got["score"] == pytest.approx(ref["score"], abs=1e-5)
        assert not got["no_answer"]
        assert item["context"][got["start"] : got["end"]] == got["answer"]
    assert one.json()["predictions"][0]["answer"] == preds[1]["answer"]
    assert missing.status_code == text.status_code == 422
    assert "context" in missing.json()["error"]["message"]
