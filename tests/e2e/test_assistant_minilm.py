"""The customer-service assistant end to end on real data, cut for CI: MiniLM intent and answer runs.

The shipped English recipes (``examples/intent_chatterbot.yaml``, ``answers_en.yaml``) are trained for
a few steps on the prepared chatterbot sets, then ``tunelab apps assistant-eval`` scores them on the
held-out files and the served route answers a held-out question with the answer run's best answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tunelab.apps.assistant import AssistantSettings
from tunelab.cli import app
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import ServeSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "e2e-assistant-key-0123456789"


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _train(example: Path, data: Path, run: Path, steps: int) -> Path:
    splits = [s for s in ("train", "dev", "test") if (data / f"{s}.csv").is_file()]
    files = [f"--data.{split}_file={data / f'{split}.csv'}" for split in splits]
    cut = [f"--train.{key}={steps}" for key in ("max_steps", "eval_steps", "save_steps")]
    _run("train", str(example), *files, *cut, f"--train.output_dir={run}")
    return run


@pytest.mark.slow
def test_assistant_recipe_scores_and_serves(tmp_path: Path):
    intent_data, answer_data = tmp_path / "chatterbot", tmp_path / "answers"
    _run("data", "prepare", "chatterbot", str(intent_data))
    _run("data", "prepare", "chatterbot-answers", str(answer_data))
    intent = _train(EXAMPLES / "intent_chatterbot.yaml", intent_data, tmp_path / "intent", 24)
    answers = _train(
        EXAMPLES / "apps" / "customer_service" / "answers_en.yaml", answer_data, tmp_path / "answers", 4
    )
    settings = tmp_path / "cs_app.yaml"
    values = {"intent_run": str(intent), "answers_run": str(answers), "min_answer_score": 0.5, "top_k": 5}
    settings.write_text(yaml.safe_dump(values), encoding="utf-8")

    scores = json.loads(
        _run(
            "apps",
            "assistant-eval",
            str(settings),
            f"--intent-data={intent_data / 'test.csv'}",
            f"--answers-data={answer_data / 'test.csv'}",
        )
    )
    assert scores["intent"]["macro_f1"] > scores["intent"]["majority_baseline_macro_f1"]
    assert scores["answers"]["recall@5"] >= scores["answers"]["recall@1"] > 0
    assert sum(scores["routes"].values()) == scores["answers"]["n_examples"]

    question = "What is AI?"
    [hits] = predict_records(load_artifact(answers), [{"text": question, "top_k": 5}], 8)
    web = create_app(ServeSettings(model_dir=str(settings), api_key=KEY), load_predictor(str(settings)))
    with TestClient(web) as client:
        body = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": question}]},
            headers={"Authorization": f"Bearer {KEY}"},
        ).json()
    routing = body["assistant"]
    assert routing["answer_score"] == pytest.approx(hits["hits"][0]["score"], abs=1e-5)
    handoff = AssistantSettings.model_fields["handoff_message"].default
    expected = hits["hits"][0]["text"] if routing["path"] == "answer" else handoff
    assert body["choices"][0]["message"]["content"] == expected
