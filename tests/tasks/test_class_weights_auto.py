"""``class_weights: auto`` (the default): balanced on skewed single-label train labels, else none."""

from __future__ import annotations

import logging

import pytest

from tunelab.tasks.classification import Params, fit


def test_auto_is_the_default_and_balances_skewed_labels(caplog):
    train = {"label": ["neg"] * 36 + ["pos"] * 4}
    assert Params().class_weights == "auto"
    with caplog.at_level(logging.INFO, logger="tunelab.tasks.classification"):
        fitted = fit(Params(), train, ["neg", "pos"])
    assert fitted.class_weights == pytest.approx({"neg": 40 / 72, "pos": 40 / 8})
    assert fitted.class_weights == fit(Params(class_weights="balanced"), train, ["neg", "pos"]).class_weights
    assert caplog.messages == ["task.params.class_weights auto: balanced (train labels skewed)"]


def test_auto_keeps_the_plain_loss_on_balanced_labels():
    fitted = fit(Params(), {"label": ["neg"] * 20 + ["pos"] * 18}, ["neg", "pos"])
    assert fitted.class_weights == "none"


def test_auto_counts_a_rare_label_as_skewed():
    train = {"label": ["a"] * 8 + ["b"] * 8 + ["c"] * 3}  # 8 / 3 is not imbalanced, but c has 3 rows
    assert isinstance(fit(Params(), train, ["a", "b", "c"]).class_weights, dict)


def test_auto_leaves_multi_label_rows_unweighted():
    train = {"label": [["a"]] * 30 + [["a", "b"]] * 2}
    assert fit(Params(multi_label=True), train, ["a", "b"]).class_weights == "none"
