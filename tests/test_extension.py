"""Adding a task is one file plus one registry line: a toy task written in a temp module trains,
predicts and serves through the real CLI and server with no other change to tunelab."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import ServeSettings
from tunelab.tasks import TASKS

# The whole task, as a contributor would write tunelab/tasks/keyword.py: only public tunelab APIs.
TOY_TASK = '''
"""Keyword sentiment: single-label text classification with its own predict schema."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from tunelab.data import load_labeled_data, load_labeled_file
from tunelab.tasks.schemas import ServeSchema, TextsRequest, text_records
from tunelab.tasks.spec import TaskSpec, without_columns


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_length: int = Field(default=32, gt=0, description="Truncate inputs to this many tokens.")


def preprocess(batch, tokenizer, params, label2id):
    out = dict(tokenizer(batch["text"], truncation=True, max_length=params.max_length))
    if "label" in batch:
        out["labels"] = [label2id[label] for label in batch["label"]]
    return out


def collator(tokenizer, params):
    return without_columns(DataCollatorWithPadding(tokenizer, return_tensors="pt"), ["example_id"])


def postprocess(predicted):
    ids = predicted.arrays["logits"].argmax(-1)
    return [{"label": predicted.labels[int(i)]} for i in ids]


def metrics(predicted):
    gold = np.asarray(predicted.features["labels"])
    return {"accuracy": float((predicted.arrays["logits"].argmax(-1) == gold).mean())}


class Verdict(BaseModel):
    label: str


class VerdictResponse(BaseModel):
    model: str
    predictions: list[Verdict]


def build(model_id, predictions):
    return VerdictResponse(model=model_id, predictions=[Verdict(**p) for p in predictions])


TASK = TaskSpec(
    name="keyword",
    params=Params,
    model_class=AutoModelForSequenceClassification,
    head_modules=("classifier",),
    metric_names=("accuracy",),
    load_data=lambda cfg, params, seed: load_labeled_data(cfg, None, seed),
    read_eval=lambda path, columns, params, labels: load_labeled_file(path, columns, list(labels)),
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
    few_shot=True,
    serve_schema=ServeSchema(TextsRequest, text_records, VerdictResponse, build),
)
'''


@pytest.fixture
def keyword_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The toy module imported from a temp file, plus its one registry line."""
    path = tmp_path / "keyword.py"
    path.write_text(TOY_TASK, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("keyword_task", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "keyword_task", module)
    spec.loader.exec_module(module)
    # The registry line (tunelab/tasks/__init__.py is a dict literal; the test adds its entry).
    monkeypatch.setitem(TASKS._entries, module.TASK.name, module.TASK)
    return module.TASK


def test_a_task_in_one_file_trains_predicts_and_serves(keyword_task, tiny_backbone_dir, toy_data, tmp_path):
    out = tmp_path / "run"
    config = {
        "model": {"name_or_path": str(tiny_backbone_dir)},
        "data": {"train_file": str(toy_data["train"]), "dev_file": str(toy_data["dev"]), "k_shot": 40},
        "task": {"name": "keyword"},
        "train": {"output_dir": str(out), "num_train_epochs": 6, "batch_size": 8, "lr": 3e-3, "seed": 0},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()

    trained = runner.invoke(app, ["train", str(tmp_path / "cfg.yaml")])
    assert trained.exit_code == 0, trained.output
    dev = json.loads((out / "best" / "metrics.json").read_text())["dev"]
    assert dev["accuracy"] >= 0.75, dev  # learnable toy data: well above the 0.5 of chance

    predicted = runner.invoke(app, ["predict", str(out), "--text", "a good movie", "--text", "a bad plot"])
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["label"] for line in lines] == ["positive", "negative"]

    web = create_app(ServeSettings(model_dir=str(out), api_key="k" * 32), load_predictor(str(out)))
    with TestClient(web) as client:
        served = client.post(
            "/v1/predict", json={"inputs": ["a good movie"]}, headers={"Authorization": "Bearer " + "k" * 32}
        )
    assert served.status_code == 200, served.text
    assert served.json()["predictions"] == [{"label": "positive"}]
