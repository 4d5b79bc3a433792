"""Shipped datasets materialise as clean, deduplicated, stratified CSV splits."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from tunelab.assets import prepare_dataset


def test_bbc_news_is_deduplicated_and_split_stratified(tmp_path: Path):
    counts = prepare_dataset("bbc-news", tmp_path / "bbc")
    rows = {}
    for split in ("train", "test"):
        with open(tmp_path / "bbc" / f"{split}.csv", encoding="utf-8", newline="") as fh:
            rows[split] = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    assert counts == {"train.csv": len(rows["train"]), "test.csv": len(rows["test"])}
    texts = [text for split in rows.values() for text, _ in split]
    assert len(texts) == len(set(texts)) == 2125  # 2,225 articles minus 100 duplicates
    labels = {split: Counter(label for _, label in r) for split, r in rows.items()}
    assert set(labels["train"]) == {"business", "entertainment", "politics", "sports", "tech"}
    for label, n in labels["test"].items():
        assert abs(n / len(rows["test"]) - labels["train"][label] / len(rows["train"])) < 0.01
    assert "research use" in (tmp_path / "bbc" / "SOURCE.txt").read_text()


def test_chatterbot_intents_are_unique_openers_with_one_category(tmp_path: Path):
    counts = prepare_dataset("chatterbot", tmp_path / "cb")
    assert counts == {"train.csv": 594, "test.csv": 149}
    splits = {}
    for split in ("train", "test"):
        with open(tmp_path / "cb" / f"{split}.csv", encoding="utf-8", newline="") as fh:
            splits[split] = [(row["text"], row["label"]) for row in csv.DictReader(fh)]
    texts = [text for rows in splits.values() for text, _ in rows]
    assert len(set(texts)) == len(texts) == 743
    train_labels = Counter(label for _, label in splits["train"])
    assert len(train_labels) == 19
    assert {"health", "humor"}.isdisjoint(train_labels)  # under 5 openers
    assert "Hello" not in texts  # opens both greetings and conversations
    assert train_labels["trivia"] > 40 * train_labels["gossip"]
