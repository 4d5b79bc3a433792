"""chatterbot-answers(-zh): distinct (query, positive) pairs, every question on one side of the split."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tunelab.assets import prepare_dataset
from tunelab.assets.chatterbot_answers import question_key


@pytest.mark.parametrize(("name", "rows"), [("chatterbot-answers", 1043), ("chatterbot-answers-zh", 504)])
def test_answer_pairs_are_distinct_and_split_by_question(tmp_path: Path, name: str, rows: int):
    counts = prepare_dataset(name, tmp_path)
    splits = {}
    for split in ("train", "dev", "test"):
        with open(tmp_path / f"{split}.csv", encoding="utf-8", newline="") as fh:
            splits[split] = [(r["query"], r["positive"]) for r in csv.DictReader(fh)]
        assert counts[f"{split}.csv"] == len(splits[split])
    pairs = [pair for split in splits.values() for pair in split]
    assert len(pairs) == len(set(pairs)) == rows
    keys = {split: {question_key(q) for q, _ in split_rows} for split, split_rows in splits.items()}
    assert keys["train"].isdisjoint(keys["dev"] | keys["test"])
    assert keys["dev"].isdisjoint(keys["test"])
    assert len(splits["train"]) > 7 * len(splits["test"])


def test_question_key_ignores_case_spaces_and_punctuation():
    assert question_key("What is AI?") == question_key("what  is ai") != question_key("what is a")
    assert question_key("你好吗?") == question_key("你好吗")
