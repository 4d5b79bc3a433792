"""Train label balance: counts per label, rare labels, imbalance, and the up-front report."""

from __future__ import annotations

import logging

import pytest

from tunelab.data.checks import IMBALANCE_RATIO, RARE_ROWS, label_balance, report_label_balance


def test_counts_follow_label_order_and_include_labels_missing_from_train():
    balance = label_balance(["b", "a", *["b"] * 5], ["a", "b", "c"])
    assert balance.counts == {"a": 1, "b": 6, "c": 0}
    assert list(balance.counts) == ["a", "b", "c"]
    assert balance.rare == ["a", "c"]
    assert balance.ratio == float("inf")
    assert balance.imbalanced


def test_multi_label_rows_count_once_per_label():
    balance = label_balance([["a", "b"], ["a"], "b"], ["a", "b"])
    assert balance.counts == {"a": 2, "b": 2}


@pytest.mark.parametrize(
    ("counts", "imbalanced", "skewed"),
    [
        ({"neg": 30, "pos": 30}, False, False),
        ({"neg": 30, "pos": 10}, False, False),  # exactly IMBALANCE_RATIO: not above it
        ({"neg": 31, "pos": 10}, True, True),
        ({"neg": 6, "pos": RARE_ROWS - 1}, False, True),  # balanced, but one label too rare to learn
        ({"neg": 900, "pos": 100}, True, True),  # the 10%-positive set
    ],
)
def test_imbalance_is_the_largest_over_smallest_count_above_the_ratio(counts, imbalanced, skewed):
    labels = [name for name, n in counts.items() for _ in range(n)]
    balance = label_balance(labels, list(counts))
    assert IMBALANCE_RATIO == 3.0
    assert balance.imbalanced is imbalanced
    assert balance.skewed is skewed


def test_summary_lists_few_labels_in_full_and_elides_the_middle_of_many():
    few = label_balance(["x"] * 5 + ["y"] * 2, ["x", "y"])
    assert few.summary() == "2 labels, 7 train rows: x 5, y 2"
    names = [f"c{i:02d}" for i in range(30)]
    many = label_balance([name for i, name in enumerate(names) for _ in range(30 - i)], names)
    text = many.summary()
    assert text.startswith("30 labels, 465 train rows: c00 30, c01 29, ")
    assert "... 18 more ..." in text
    assert text.endswith("c28 2, c29 1")
    assert "c15" not in text


def test_report_warns_about_rare_labels_and_imbalance(caplog):
    balance = label_balance(["big"] * 40 + ["mid"] * 10 + ["tiny"] * 2, ["big", "mid", "tiny"])
    with caplog.at_level(logging.INFO, logger="tunelab.data.checks"):
        report_label_balance(balance)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert info == ["train labels: 3 labels, 52 train rows: big 40, mid 10, tiny 2"]
    assert len(warnings) == 2
    assert "1 labels have fewer than 5 train rows (tiny 2)" in warnings[0]
    assert "20.0x the rows of the smallest" in warnings[1]


def test_report_of_balanced_labels_only_counts(caplog):
    with caplog.at_level(logging.INFO, logger="tunelab.data.checks"):
        report_label_balance(label_balance(["a"] * 8 + ["b"] * 6, ["a", "b"]))
    assert [r.levelno for r in caplog.records] == [logging.INFO]
