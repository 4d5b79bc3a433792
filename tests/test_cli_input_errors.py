"""Damaged inputs through the CLI: one error naming file and line, never a traceback; ``validate --data``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from transformers import BertForSequenceClassification
from typer.testing import CliRunner

from toy_tasks import toy_rows, write_csv
from tunelab.cli import app
from tunelab.data import Columns
from tunelab.models.artifact import save_model
from tunelab.models.load import load_pretrained, load_tokenizer
from tunelab.models.run_info import RUN_FILE, RunInfo

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def classifier_dir(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tunelab classifier (negative/positive) saved like a run's best/: what eval, predict, ... load."""
    out = tmp_path_factory.mktemp("classifier") / "best"
    model = load_pretrained(BertForSequenceClassification, tiny_backbone_dir, LABELS)
    info = RunInfo(task="classification", labels=LABELS, columns=Columns(text="text", label="label"))
    save_model(model, load_tokenizer(tiny_backbone_dir), out, info)
    return out


def _invoke(*args: Any) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def _config(path: Path, model: Path, **data: Any) -> Path:
    raw = {
        "model": {"name_or_path": str(model)},
        "data": {key: str(value) for key, value in data.items()},
        "train": {"output_dir": str(path.parent / "run"), "max_steps": 1},
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _assert_clean_failure(result: Result, *lines: str) -> None:
    """Non-zero exit through the CLI's error path (no traceback) with ``lines`` in this order."""
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    output = result.output.splitlines()
    positions = [[i for i, line in enumerate(output) if line.startswith(expected)] for expected in lines]
    assert all(positions), result.output
    assert [found[0] for found in positions] == sorted(found[0] for found in positions), result.output


COMMANDS = ["train", "eval", "predict", "export", "serve"]


@pytest.mark.parametrize("kind", ["tunelab", "plain-hf"])
@pytest.mark.parametrize("command", COMMANDS)
def test_corrupt_config_json_is_a_one_line_error_from_every_command(
    command: str,
    kind: str,
    classifier_dir: Path,
    toy_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(classifier_dir, broken)
    if kind == "plain-hf":
        (broken / RUN_FILE).unlink()
    (broken / "config.json").write_text('{"model_type": "bert",\n', encoding="utf-8")
    monkeypatch.setattr(
        "tunelab.serving.app.run", lambda *_: pytest.fail("serve started with a broken model")
    )
    args = {
        "train": ["train", _config(tmp_path / "cfg.yaml", broken, train_file=toy_data["train"])],
        "eval": ["eval", broken, "--data", toy_data["test"]],
        "predict": ["predict", broken, "--text", "a fine day"],
        "export": ["export", broken, "--to", tmp_path / "out"],
        "serve": ["serve", broken],
    }[command]

    result = _invoke(*args)

    _assert_clean_failure(
        result,
        f"error: {broken}/config.json: not valid JSON (line 2 col 1: Expecting property name enclosed in "
        "double quotes); the model directory is damaged",
    )
    assert result.exit_code == 1


def _not_utf8_csv(path: Path) -> Path:
    write_csv(path, toy_rows(8, seed=0))
    with open(path, "ab") as fh:
        fh.write(b"caf\xe9 au lait,positive\n")
    return path


@pytest.mark.parametrize("command", ["train", "eval", "predict-csv", "predict-txt"])
def test_input_that_is_not_utf8_is_reported_with_file_line_by_train_eval_predict(
    command: str, classifier_dir: Path, tmp_path: Path
) -> None:
    bad = _not_utf8_csv(tmp_path / "data.csv")
    if command == "predict-txt":
        bad = tmp_path / "inputs.txt"
        bad.write_bytes(b"an input\n" * 9 + b"caf\xe9 au lait,positive\n")
    args = {
        "train": ["train", _config(tmp_path / "cfg.yaml", classifier_dir, train_file=bad)],
        "eval": ["eval", classifier_dir, "--data", bad],
        "predict-csv": ["predict", classifier_dir, "--file", bad],
        "predict-txt": ["predict", classifier_dir, "--file", bad],
    }[command]

    result = _invoke(*args)

    _assert_clean_failure(result, "error: ", f"{bad}:10: not UTF-8 (byte 0xe9 at column 4); save it as UTF-8")


def test_stdin_that_is_not_utf8_is_reported_with_its_line(classifier_dir: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(classifier_dir)], input=b"a fine day\ncaf\xe9 noir\n")

    _assert_clean_failure(result, "error: <stdin>:2: not UTF-8 (byte 0xe9 at column 4); save it as UTF-8")


def test_validate_data_reports_every_bad_row_in_file_then_line_order(tmp_path: Path) -> None:
    """Reads every row as train does, loads no model: the model directory here is empty."""
    train = tmp_path / "train.csv"
    train.write_bytes(b"text,label\ngood,pos\n\xff bad byte,neg\nfine,neg\n,pos\nok,pos\n")
    dev = write_csv(tmp_path / "dev.csv", [("a", "pos"), ("b", "other")])
    (tmp_path / "empty-model").mkdir()
    cfg = _config(tmp_path / "cfg.yaml", tmp_path / "empty-model", train_file=train, dev_file=dev)
    assert _invoke("validate", cfg).exit_code == 0  # without --data no row is read

    result = _invoke("validate", cfg, "--data")

    _assert_clean_failure(
        result,
        "error: 3 bad rows:",
        f"{train}:3: not UTF-8 (byte 0xff at column 1)",
        f"{train}:5: empty text in column 'text'",
        f"{dev}:3: label 'other' is not in labels [neg, pos]",
    )


def test_validate_data_good_config_prints_rows_per_split_and_labels(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", [(f"row {i}", ("neg", "pos")[i % 2]) for i in range(6)])
    dev = write_csv(tmp_path / "dev.csv", [("a", "pos"), ("b", "neg")])
    (tmp_path / "empty-model").mkdir()
    cfg = _config(tmp_path / "cfg.yaml", tmp_path / "empty-model", train_file=train, dev_file=dev)

    result = _invoke("validate", cfg, "--data", "--data.test_file", dev)

    assert result.exit_code == 0, result.output
    assert (
        result.output.splitlines()[-1]
        == f"{cfg}: data valid (rows: train 6, dev 2, test 2; 2 labels: neg, pos)"
    )
