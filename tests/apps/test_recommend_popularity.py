"""The recommendation recipe's popularity baseline equals a brute-force ranking and scoring loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from tunelab.apps.recommend import popularity_metrics
from tunelab.cli import app
from tunelab.data import TaskData

CLICKS = ["a", "c", "a", "b", "c", "c", "e"]  # c: 3, a: 2, b: 1, e: 1, d and f: never clicked
CANDIDATES = ["a", "b", "c", "d", "e", "f"]
READERS = {"r1": ["b"], "r2": ["d", "a"], "r3": ["f", "e", "c"]}


def _brute_force(clicks: list[str], candidates: list[str], readers: dict[str, list[str]]) -> dict[str, float]:
    """Sort by (clicks desc, candidate order), then score each reader's list with the textbook formulas."""
    ranking = sorted(candidates, key=lambda c: (-clicks.count(c), candidates.index(c)))
    per_reader: dict[str, list[float]] = {}
    for relevant in readers.values():
        hits = [item in relevant for item in ranking]
        scores = {"mrr": 1 / (hits.index(True) + 1)}
        for k in (1, 5, 10):
            scores[f"recall@{k}"] = sum(hits[:k]) / len(relevant)
        dcg = sum(1 / math.log2(i + 2) for i, hit in enumerate(hits[:10]) if hit)
        scores["ndcg@10"] = dcg / sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
        for name, value in scores.items():
            per_reader.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in per_reader.items()}


def _task_data(clicks: list[str], test: bool) -> TaskData:
    train = datasets.Dataset.from_dict({"text": [f"q{i}" for i in range(len(clicks))], "positive": clicks})
    queries = datasets.Dataset.from_dict({"text": list(READERS), "positives": list(READERS.values())})
    other = datasets.Dataset.from_dict({"text": ["x"], "positives": [["f"]]})
    return TaskData(train, other if test else queries, queries if test else None, CANDIDATES)


@pytest.mark.parametrize("test", [True, False])
def test_popularity_metrics_equal_brute_force(test: bool):
    metrics = popularity_metrics(_task_data(CLICKS, test))
    expected = {**_brute_force(CLICKS, CANDIDATES, READERS), "n_candidates": len(CANDIDATES)}
    assert metrics == pytest.approx(expected)
    assert metrics["recall@1"] == pytest.approx(1 / 9)  # c is first for all, one of r3's three items
    assert metrics["ndcg@10"] < 1.0


def test_popularity_ranks_unclicked_candidates_in_order_not_all_first():
    """d and f were never clicked: d is 5th and f 6th of six, not tied at the top."""
    data = TaskData(
        datasets.Dataset.from_dict({"text": ["q"], "positive": ["a"]}),
        datasets.Dataset.from_dict({"text": ["r"], "positives": [["f"]]}),
        None,
        ["a", "d", "f"],
    )
    assert popularity_metrics(data)["mrr"] == pytest.approx(1 / 3)


def test_baseline_popularity_command_scores_a_retrieval_config(tmp_path: Path):
    """Same figures from the files: the run's candidates are train, dev, test positives, then the corpus."""
    rows = {
        "train.jsonl": [{"query": f"history {i}", "positive": item} for i, item in enumerate(CLICKS)],
        "dev.jsonl": [{"query": "dev reader", "positive": "a"}],
        "test.jsonl": [{"query": r, "positive": p} for r, items in READERS.items() for p in items],
    }
    for name, part in rows.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    (tmp_path / "items.csv").write_text("text\n" + "\n".join(CANDIDATES) + "\n", encoding="utf-8")
    config = {
        "model": {"name_or_path": "minilm-l6"},
        "data": {f"{split}_file": str(tmp_path / f"{split}.jsonl") for split in ("train", "dev", "test")},
        "task": {"name": "retrieval", "params": {"corpus_file": str(tmp_path / "items.csv")}},
        "train": {"output_dir": str(tmp_path / "run")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["baseline", "popularity", str(tmp_path / "run.yaml")])
    assert result.exit_code == 0, result.output
    expected = {**_brute_force(CLICKS, ["a", "c", "b", "e", "d", "f"], READERS), "n_candidates": 6}
    assert json.loads(result.stdout) == pytest.approx(expected)


def test_baseline_popularity_command_refuses_a_classification_config(tmp_path: Path):
    (tmp_path / "train.csv").write_text("text,label\ngood,positive\nbad,negative\n", encoding="utf-8")
    config = {
        "model": {"name_or_path": "minilm-l6"},
        "data": {"train_file": str(tmp_path / "train.csv"), "dev_file": str(tmp_path / "train.csv")},
        "task": {"name": "classification"},
        "train": {"output_dir": str(tmp_path / "run")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["baseline", "popularity", str(tmp_path / "run.yaml")])
    assert result.exit_code == 2
    assert "needs a retrieval config" in result.output
