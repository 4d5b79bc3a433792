"""The popularity baseline (the recommendation recipe's) equals a brute-force ranking and scoring loop."""

from __future__ import annotations

import math

import datasets
import pytest

from tunelab.apps.baselines import popularity
from tunelab.data import TaskData

CLICKS = ["a", "c", "a", "b", "c", "c", "e", "c", "a", "b"]  # c: 4, a: 3, b: 2, e: 1, d and f: 0
CANDIDATES = ["a", "b", "c", "d", "e", "f"]
READERS = {"r1": ["b"], "r2": ["d", "a"], "r3": ["f", "e", "c"]}


def _brute_force(clicks: list[str], candidates: list[str], readers: dict[str, list[str]]) -> dict[str, float]:
    """Each relevant item's expected position under random tie-breaking, then the textbook formulas."""

    def rank(item: str) -> float:
        mine = clicks.count(item)
        higher = sum(clicks.count(c) > mine for c in candidates)
        return 1 + higher + (sum(clicks.count(c) == mine for c in candidates) - 1) / 2

    per_reader: dict[str, list[float]] = {}
    for relevant in readers.values():
        ranks = [rank(item) for item in relevant]
        scores = {"mrr": 1 / min(ranks)}
        for k in (1, 5, 10):
            scores[f"recall@{k}"] = sum(r <= k for r in ranks) / len(relevant)
        dcg = sum(1 / math.log2(r + 1) for r in ranks if r <= 10)
        scores["ndcg@10"] = dcg / sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
        for name, value in scores.items():
            per_reader.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in per_reader.items()}


@pytest.mark.parametrize("split", ["dev", "test"])
def test_popularity_equals_brute_force(split: str):
    train = datasets.Dataset.from_dict({"text": [f"q{i}" for i in range(len(CLICKS))], "positive": CLICKS})
    queries = datasets.Dataset.from_dict({"text": list(READERS), "positives": list(READERS.values())})
    other = datasets.Dataset.from_dict({"text": ["x"], "positives": [["f"]]})
    data = TaskData(
        train, queries if split == "dev" else other, queries if split == "test" else None, CANDIDATES
    )

    metrics = popularity(None, data, split)  # type: ignore[arg-type]  # popularity reads no plan field

    assert metrics == pytest.approx(_brute_force(CLICKS, CANDIDATES, READERS))
    assert metrics["recall@1"] == pytest.approx(1 / 9)  # c is first for all, one of r3's three items
    assert metrics["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)  # r2's d ties with f at 5.5, a is 2nd
