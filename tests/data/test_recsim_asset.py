"""``bbc-recsim``: seeded simulated readers, split by reader and by time, popularity skewed."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tunelab.assets import prepare_dataset
from tunelab.assets.recsim import HISTORY, NEXT, READERS, SEPARATOR, build_world, item_text, simulate_readers


@pytest.fixture(scope="module")
def recsim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("recsim") / "bbc-recsim"
    return out, prepare_dataset("bbc-recsim", out)


def _rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_item_text_is_title_and_first_sentence_capped():
    raw = "Dollar gains on speech\n\nThe dollar rose. Then it fell again.\n\nMore text."
    assert item_text(raw) == "Dollar gains on speech. The dollar rose."
    assert item_text("Why?\n\nBecause of " + "word " * 40) == "Why? Because of " + " ".join(["word"] * 21)


def test_world_and_readers_are_seeded():
    texts = [
        f"topic{t} story{s} item{i} " + "common " * (i % 3)
        for t in range(5)
        for s in range(4)
        for i in range(6)
    ]
    topics = [f"t{t}" for t in range(5) for _ in range(24)]
    first, second = build_world(texts, texts, topics), build_world(texts, texts, topics)
    other = build_world(texts, texts, topics, seed=1)
    for field in ("topic", "story", "new", "weight"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert not np.array_equal(first.new, other.new)
    readers = [simulate_readers(first, 30, np.random.default_rng(3)) for _ in range(2)]
    assert readers[0] == readers[1]
    assert len({tuple(history) for history, _ in readers[0]}) == 30
    for history, clicks in readers[0]:
        assert len(set(history)) == HISTORY
        assert len(set(clicks)) == NEXT
        assert not first.new[history].any()
        assert first.new[clicks].all()


def test_recsim_splits_by_reader_and_time_without_leakage(recsim: tuple[Path, dict[str, int]]):
    out, counts = recsim
    splits = {name: _rows(out / name) for name in READERS}
    assert counts == {**{name: n * NEXT for name, n in READERS.items()}, "items.csv": counts["items.csv"]}
    with open(out / "items.csv", encoding="utf-8", newline="") as fh:
        candidates = [row["text"] for row in csv.DictReader(fh)]
    assert len(candidates) == len(set(candidates)) == counts["items.csv"]
    queries = {name: Counter(row["query"] for row in rows) for name, rows in splits.items()}
    for name, per_query in queries.items():
        assert len(per_query) == READERS[name]
        assert set(per_query.values()) == {NEXT}
    assert not queries["test.jsonl"].keys() & (queries["train.jsonl"].keys() | queries["dev.jsonl"].keys())
    assert not queries["dev.jsonl"].keys() & queries["train.jsonl"].keys()
    histories = set()
    for rows in splits.values():
        for row in rows:
            history = row["query"].split(SEPARATOR)
            assert len(history) == HISTORY
            assert row["positive"] not in history
            histories.update(history)
    positives = {row["positive"] for rows in splits.values() for row in rows}
    assert positives <= set(candidates)
    assert not histories & set(candidates)  # time split: no history item is ever a candidate
    assert "SIMULATED" in (out / "SOURCE.txt").read_text()


def test_recsim_popularity_is_skewed(recsim: tuple[Path, dict[str, int]]):
    out, counts = recsim
    clicks = Counter(row["positive"] for row in _rows(out / "train.jsonl"))
    top = sorted(clicks.values(), reverse=True)[: counts["items.csv"] // 10]
    assert sum(top) / sum(clicks.values()) > 0.3  # a tenth of the candidates takes a third of the clicks
