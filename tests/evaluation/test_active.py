"""Active-learning strategies: scores equal a hand computation; coreset is farthest-first."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tunelab.evaluation.active import coreset_picks, entropy_scores, margin_scores, uncertainty_picks

PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # confident
        [1 / 3, 1 / 3, 1 / 3],  # uniform: most uncertain by both
        [0.50, 0.45, 0.05],  # close top two, low entropy
        [0.40, 0.30, 0.30],  # wide top two, high entropy
    ]
)


def _entropy(row: list[float]) -> float:
    return -sum(p * math.log(p) for p in row if p > 0)


def test_entropy_scores_equal_the_hand_computation():
    expected = [_entropy(row) for row in PROBS.tolist()]
    np.testing.assert_allclose(entropy_scores(PROBS), expected, rtol=1e-12)
    assert entropy_scores(np.array([[1.0, 0.0]]))[0] == 0.0


def test_margin_scores_equal_one_minus_the_top_two_gap():
    np.testing.assert_allclose(margin_scores(PROBS), [1 - 0.85, 1.0, 1 - 0.05, 1 - 0.10], rtol=1e-12)


@pytest.mark.parametrize(("strategy", "order"), [("entropy", [1, 3, 2, 0]), ("margin", [1, 2, 3, 0])])
def test_uncertainty_picks_rank_most_uncertain_first(strategy: str, order: list[int]):
    """Entropy and margin disagree on rows 2 and 3: each strategy's own order comes back."""
    picks, scores = uncertainty_picks(strategy, PROBS, k=4)  # type: ignore[arg-type]
    assert picks.tolist() == order
    assert (np.diff(scores) <= 0).all()
    assert uncertainty_picks(strategy, PROBS, k=2)[0].tolist() == order[:2]  # type: ignore[arg-type]


def test_coreset_picks_farthest_first_and_never_a_labelled_point():
    labelled = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    pool = torch.tensor(
        [
            [0.0, 0.0],  # a labelled point again: distance 0
            [10.0, 0.0],  # likewise
            [5.0, 1.0],  # sqrt(26) from the nearest labelled point
            [0.0, 8.0],  # 8: the farthest, picked first
            [0.0, 7.0],  # 7, but only 1 from the first pick
            [10.0, 3.0],  # 3
        ]
    )
    picks, scores = coreset_picks(pool, labelled, k=4)
    assert picks.tolist() == [3, 2, 5, 4]
    np.testing.assert_allclose(scores, [8.0, math.sqrt(26), 3.0, 1.0], rtol=1e-6)
    assert {0, 1}.isdisjoint(picks.tolist())


def test_coreset_picks_each_row_once_even_past_the_distinct_points():
    pool = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    picks, _ = coreset_picks(pool, torch.zeros(1, 2), k=5)
    assert sorted(picks.tolist()) == [0, 1, 2]
    assert picks[0] == 2
