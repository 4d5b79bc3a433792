"""The CLI end to end on the tiny model: train -> eval -> predict, and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli import app


@pytest.fixture
def config_file(tmp_path: Path, tiny_backbone_dir: Path, toy_data: dict[str, Path]) -> Path:
    raw = {
        "model": {"name_or_path": str(tiny_backbone_dir)},
        "data": {"train_file": str(toy_data["train"]), "test_file": str(toy_data["test"]), "dev_ratio": 0.25},
        "task": {"params": {"max_length": 32}},
        "train": {
            "output_dir": str(tmp_path / "run"),
            "num_train_epochs": 10,
            "batch_size": 8,
            "lr": 2e-3,
            "save_steps": 20,
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def trained_run(config_file: Path, tmp_path: Path) -> Path:
    result = CliRunner().invoke(app, ["train", str(config_file)])
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_train_writes_complete_model_dir(trained_run: Path):
    best = trained_run / "best"
    expected = {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "tunelab_run.json",
        "metrics.json",
        "confusion_dev.png",
        "confusion_test.png",
        "loss_curve.png",
    }
    assert expected <= {p.name for p in best.iterdir()}
    config = json.loads((best / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    run_info = json.loads((best / "tunelab_run.json").read_text())
    assert run_info["config"]["train"]["lr"] == 2e-3
    assert run_info["seed"] == 42
    assert {"torch", "transformers", "tunelab"} <= set(run_info["versions"])
    metrics = json.loads((best / "metrics.json").read_text())
    assert set(metrics) == {"dev", "test"}
    test = metrics["test"]
    assert test["accuracy"] >= 0.8
    assert set(test["per_class"]) == {"negative", "positive"}
    assert sum(map(sum, test["confusion_matrix"])) == test["n_examples"] == 32
    assert (trained_run / "run_config.yaml").is_file()
    assert (trained_run / "tb").is_dir()


def test_eval_reports_metrics_on_a_file(trained_run: Path, toy_data: dict[str, Path], tmp_path: Path):
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(trained_run / "best"),
            "--data",
            str(toy_data["test"]),
            "--report-dir",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout[result.stdout.index("{") :])
    saved = json.loads((trained_run / "best" / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])
    assert (tmp_path / "r" / "confusion_eval.png").is_file()


def _predictions(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_predict_from_text_stdin_and_file_agree(trained_run: Path, tmp_path: Path):
    texts = ["the movie was great and lovely", "the plot was awful and dull"]
    runner = CliRunner()
    by_text = runner.invoke(app, ["predict", str(trained_run), *sum([["--text", t] for t in texts], [])])
    by_stdin = runner.invoke(app, ["predict", str(trained_run / "best")], input="\n".join(texts) + "\n")
    (tmp_path / "in.txt").write_text("\n".join(texts))
    by_file = runner.invoke(app, ["predict", str(trained_run / "best"), "--file", str(tmp_path / "in.txt")])
    for result in (by_text, by_stdin, by_file):
        assert result.exit_code == 0, result.output
    preds = _predictions(by_text.stdout)
    assert [p["label"] for p in preds] == ["positive", "negative"]
    assert all(sum(p["probabilities"].values()) == pytest.approx(1.0) for p in preds)
    assert _predictions(by_stdin.stdout) == preds == _predictions(by_file.stdout)


def test_predict_refuses_a_directory_that_is_not_a_model(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "notes"), "--text", "hi"])
    assert result.exit_code == 1
    assert "not a tunelab or Hugging Face model directory" in result.output


def test_predict_refuses_a_non_classifier_hf_dir(tiny_backbone_dir: Path):
    result = CliRunner().invoke(app, ["predict", str(tiny_backbone_dir), "--text", "hi"])
    assert result.exit_code == 1
    assert "must be one of: *ForSequenceClassification (classification)" in result.output


def test_train_refuses_bad_config_before_loading_anything(config_file: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["train", str(config_file), "--train.lr", "0", "--train.typo", "1"])
    assert result.exit_code == 2
    assert "train.lr: Input should be greater than 0" in result.output
    assert "train.typo: unknown key" in result.output
    assert not (tmp_path / "run").exists()


def test_train_refuses_non_empty_output_dir_without_resume(trained_run: Path, config_file: Path):
    result = CliRunner().invoke(app, ["train", str(config_file)])
    assert result.exit_code == 1
    assert "--resume" in result.output


def test_train_resume_of_a_finished_run_keeps_the_model(trained_run: Path, config_file: Path):
    before = (trained_run / "best" / "model.safetensors").read_bytes()
    result = CliRunner().invoke(app, ["train", str(config_file), "--resume"])
    assert result.exit_code == 0, result.output
    assert (trained_run / "best" / "model.safetensors").read_bytes() == before
