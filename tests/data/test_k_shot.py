"""data.k_shot: exactly K rows per label, seeded, logged; short labels keep what they have."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from toy_tasks import toy_rows, write_csv
from tunelab.config import DataConfig
from tunelab.data import load_labeled_data
from tunelab.data.splits import k_shot

LABELS = ["a"] * 30 + ["b"] * 12 + ["c"] * 20


@pytest.mark.parametrize("k", [1, 8, 12])
def test_k_shot_takes_exactly_k_rows_of_every_label(k):
    rows = k_shot(LABELS, k, seed=0)
    assert Counter(LABELS[i] for i in rows) == {"a": k, "b": k, "c": k}
    assert rows == sorted(set(rows))


def test_k_shot_is_seeded():
    assert k_shot(LABELS, 8, seed=1) == k_shot(LABELS, 8, seed=1) != k_shot(LABELS, 8, seed=2)


def test_k_shot_keeps_all_rows_of_a_short_label_with_a_warning():
    with pytest.warns(UserWarning, match="label 'b' has only 12 rows for k_shot=16"):
        rows = k_shot(LABELS, 16, seed=0)
    assert Counter(LABELS[i] for i in rows) == {"a": 16, "b": 12, "c": 16}


def test_k_shot_zero_keeps_nothing():
    assert k_shot(LABELS, 0, seed=0) == []


def test_load_labeled_data_samples_k_per_label_from_train_and_logs_it(tmp_path, caplog):
    train = write_csv(tmp_path / "train.csv", toy_rows(60, seed=1))
    dev = write_csv(tmp_path / "dev.csv", toy_rows(10, seed=2))
    cfg = DataConfig(train_file=train, dev_file=dev, k_shot=4)
    with caplog.at_level(logging.INFO, logger="tunelab.data"):
        data = load_labeled_data(cfg, None, seed=5)
    assert Counter(data.train["label"]) == {"negative": 4, "positive": 4}
    assert len(data.dev) == 10
    assert "k_shot=4 (seed 5): 8 train rows {'negative': 4, 'positive': 4}, row indices [" in caplog.text
