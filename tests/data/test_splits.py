"""data.splits holdout/three-way splits: seeded, disjoint, covering every row, stratified by label."""

from __future__ import annotations

from collections import Counter

import pytest

from tunelab.data.splits import holdout_split, stratified_split, three_way_split

LABELS = ["a"] * 500 + ["b"] * 300 + ["c"] * 200


def _shares(labels: list[str]) -> dict[str, float]:
    return {label: n / len(labels) for label, n in Counter(labels).items()}


def test_holdout_split_is_seeded_disjoint_complete_and_stratified() -> None:
    rows = [(f"text {i}", label) for i, label in enumerate(LABELS)]
    train, test = holdout_split(rows, stratify=LABELS)
    assert (train, test) == holdout_split(rows, stratify=LABELS)
    assert test != holdout_split(rows, stratify=LABELS, seed=1)[1]
    assert len(test) == 200
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(rows)
    assert _shares([label for _, label in test]) == _shares(LABELS)


def test_holdout_split_without_labels_keeps_the_requested_share() -> None:
    train, test = holdout_split(list(range(50)), test_size=0.1)
    assert len(test) == 5
    assert sorted(train + test) == list(range(50))


@pytest.mark.parametrize("stratify", [LABELS, None])
def test_three_way_split_is_80_10_10_seeded_disjoint_and_complete(stratify: list[str] | None) -> None:
    train, dev, test = three_way_split(len(LABELS), stratify)
    assert (len(train), len(dev), len(test)) == (800, 100, 100)
    assert sorted(train + dev + test) == list(range(len(LABELS)))
    assert (train, dev, test) == three_way_split(len(LABELS), stratify)
    assert (train, dev, test) != three_way_split(len(LABELS), stratify, seed=1)


def test_three_way_split_keeps_label_shares_in_every_split() -> None:
    for split in three_way_split(len(LABELS), LABELS):
        assert _shares([LABELS[i] for i in split]) == _shares(LABELS)


def test_stratified_split_returns_the_holdout_rows_sorted() -> None:
    train, dev = stratified_split(LABELS, 0.2, seed=3)
    holdout = holdout_split(list(range(len(LABELS))), LABELS, 0.2, seed=3)
    assert (train, dev) == tuple(sorted(part) for part in holdout)
