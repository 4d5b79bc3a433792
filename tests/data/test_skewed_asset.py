"""``rotten-tomatoes-skewed``: the balanced set's own split, positives cut to 10% of each split."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tunelab.assets import prepare_dataset


def _rows(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)]


def test_skewed_set_is_a_ten_percent_positive_subset_of_each_balanced_split(tmp_path: Path):
    counts = prepare_dataset("rotten-tomatoes-skewed", tmp_path / "skewed")
    prepare_dataset("rotten-tomatoes", tmp_path / "balanced")
    for split in ("train", "test"):
        skewed, balanced = (_rows(tmp_path / name / f"{split}.csv") for name in ("skewed", "balanced"))
        assert counts[f"{split}.csv"] == len(skewed)
        assert set(skewed) <= set(balanced)  # same rows, same split: no test row was a train row
        negatives = [row for row in balanced if row[1] == "negative"]
        assert [row for row in skewed if row[1] == "negative"] == negatives  # every one, in order
        positives = sum(label == "positive" for _, label in skewed)
        assert positives / len(skewed) == pytest.approx(0.1, abs=0.001)
    assert "down-sampled to 10%" in (tmp_path / "skewed" / "SOURCE.txt").read_text()
