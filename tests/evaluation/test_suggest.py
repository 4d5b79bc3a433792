"""`tunelab label suggest` on a tiny trained run: k scored rows, training rows out, bad rows as file:line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from toy_tasks import toy_rows, write_csv
from tunelab.cli import app
from tunelab.evaluation.active import entropy_scores
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records

SPLITS = (("train", 48, 2), ("dev", 16, 3))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> Path:
    """A tiny classification run on 48 toy rows (16 dev rows), trained by the CLI."""
    tmp = tmp_path_factory.mktemp("suggest")
    data = {name: str(write_csv(tmp / f"{name}.csv", toy_rows(n, seed))) for name, n, seed in SPLITS}
    raw = {
        "model": {"name_or_path": str(tiny_backbone_dir)},
        "data": {"train_file": data["train"], "dev_file": data["dev"]},
        "task": {"params": {"max_length": 32}},
        "train": {"output_dir": str(tmp / "run"), "num_train_epochs": 3, "batch_size": 8, "lr": 2e-3},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["train", str(tmp / "cfg.yaml")])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def _pool(path: Path, run: Path, n_new: int) -> tuple[Path, set[str]]:
    """A pool of ``n_new`` unseen rows plus 3 train and 2 dev rows of the run (an id column, no label)."""
    labelled = [text for text, _ in toy_rows(48, seed=2)[:3] + toy_rows(16, seed=3)[:2]]
    new = [text for text, _ in toy_rows(n_new, seed=9)]
    assert not set(new) & set(labelled)
    rows = [(f"id{i}", text) for i, text in enumerate(new + labelled)]
    return write_csv(path, rows, header=("id", "text")), set(new)


@pytest.mark.parametrize("strategy", ["entropy", "margin", "coreset"])
def test_suggest_writes_k_scored_rows_without_training_rows(run: Path, tmp_path: Path, strategy: str):
    pool, new = _pool(tmp_path / "pool.csv", run, n_new=12)
    out = tmp_path / "suggested.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "label",
            "suggest",
            str(run),
            "--pool",
            str(pool),
            "--k",
            "5",
            "--strategy",
            strategy,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    assert {
        row["text"] for row in rows
    } <= new  # the 5 labelled rows are never suggested, whatever they score
    assert all(
        row["id"].startswith("id") and row["predicted_label"] in ("negative", "positive") for row in rows
    )
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0


def test_suggest_csv_k_larger_than_the_pool_gives_every_unseen_row(run: Path, tmp_path: Path):
    pool, new = _pool(tmp_path / "pool.csv", run, n_new=6)
    out = tmp_path / "suggested.csv"
    result = CliRunner().invoke(
        app, ["label", "suggest", str(run), "--pool", str(pool), "--k", "50", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "more than the 6 pool rows left" in result.output
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {row["text"] for row in rows} == new
    assert list(rows[0]) == ["id", "text", "score", "predicted_label"]
    predicted = predict_records(load_artifact(run), [{"text": row["text"]} for row in rows], batch_size=4)
    probs = np.array([[p["probabilities"][name] for name in ("negative", "positive")] for p in predicted])
    np.testing.assert_allclose([float(row["score"]) for row in rows], entropy_scores(probs), rtol=1e-6)
    assert [row["predicted_label"] for row in rows] == [p["label"] for p in predicted]


def test_suggest_reports_a_bad_pool_row_as_file_line(run: Path, tmp_path: Path):
    pool = tmp_path / "pool.csv"
    pool.write_text("text,label\nfine words here,\n   ,\nmore fine words,\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["label", "suggest", str(run), "--pool", str(pool), "--k", "2"])
    assert result.exit_code == 1
    assert f"{pool}:3: empty text in column 'text'" in result.output


def test_suggest_refuses_a_pool_of_labelled_rows_and_an_unknown_strategy(run: Path, tmp_path: Path):
    pool = write_csv(tmp_path / "pool.csv", toy_rows(48, seed=2)[:3])
    result = CliRunner().invoke(app, ["label", "suggest", str(run), "--pool", str(pool)])
    assert result.exit_code == 1
    assert "all 3 rows are in the run's labelled data" in result.output
    result = CliRunner().invoke(
        app, ["label", "suggest", str(run), "--pool", str(pool), "--strategy", "random"]
    )
    assert result.exit_code == 2
    assert "--strategy: 'random' is not one of entropy, margin, coreset" in result.output
