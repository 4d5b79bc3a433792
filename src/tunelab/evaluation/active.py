"""Active-learning strategies: which unlabelled rows a model would learn most from if they were labelled.

Pure functions over a model's outputs on the pool; ``evaluation.suggest`` feeds them from a saved run.
Every score is "higher = ask a person first":

- ``entropy``: the Shannon entropy of the predicted distribution (uncertainty sampling, Lewis & Gale 1994).
- ``margin``: 1 - (top-1 probability - top-2 probability) (margin sampling, Scheffer et al. 2001).
- ``coreset``: greedy k-center on the model's sentence embeddings (Sener & Savarese 2018, "Active
  Learning for Convolutional Neural Networks: A Core-Set Approach"): each pick is the pool row farthest
  from every labelled row and every earlier pick; its score is that distance.

Hand-written because the active-learning libraries (modAL, small-text) wrap whole estimators and
training loops; the strategies themselves are a few tensor ops.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

Strategy = Literal["entropy", "margin", "coreset"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
DISTANCE_CHUNK = 2**24  # distances computed per block of the labelled set: pool rows x chunk <= this


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """(N, C) probabilities -> (N,) entropy in nats; 0 for a one-hot row, ln C for a uniform one."""
    p = probs.astype(np.float64)
    scores: np.ndarray = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1)
    return scores


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """(N, C) probabilities -> (N,) 1 - (best - second best): 1 on a tie, 0 when one label has it all."""
    top2 = np.sort(probs.astype(np.float64), axis=-1)[:, -2:]  # (N, 2): second best, best
    scores: np.ndarray = 1.0 - (top2[:, 1] - top2[:, 0])
    return scores


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, highest first; ties keep row order (stable sort)."""
    return np.argsort(-scores, kind="stable")[:k]


def nearest_distances(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(P, H), (L, H) -> (P,) Euclidean distance of each point to its nearest center; inf when L is 0.

    The (P, L) distance matrix is built in blocks of the centers, so a large labelled set never needs
    more than ``DISTANCE_CHUNK`` distances in memory at once.
    """
    nearest = torch.full((len(points),), float("inf"), dtype=points.dtype)
    step = max(1, DISTANCE_CHUNK // max(1, len(points)))
    for start in range(0, len(centers), step):
        nearest = torch.minimum(nearest, torch.cdist(points, centers[start : start + step]).min(dim=1).values)
    return nearest


def coreset_picks(pool: torch.Tensor, labelled: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center: ``k`` pool rows (in pick order) and each one's distance when it was picked.

    (P, H) pool and (L, H) labelled embeddings. Each pick is the row farthest from the labelled rows
    and the rows picked before it; then every row's nearest-center distance is lowered by one (P,)
    distance to the new pick, so the loop runs ``k`` times, never over rows. A pool row equal to a
    labelled one has distance 0 and is picked only once every other row is. With no labelled rows the
    first pick is row 0 (every distance is infinite), and the distances after it are finite.
    """
    pool, labelled = pool.float(), labelled.float()
    nearest = nearest_distances(pool, labelled)  # (P,)
    picks, scores = [], []
    for _ in range(min(k, len(pool))):
        i = int(nearest.argmax())
        picks.append(i)
        scores.append(float(nearest[i]))
        nearest = torch.minimum(nearest, torch.cdist(pool, pool[i : i + 1]).squeeze(1))
        nearest[i] = -1.0  # picked: never again, even when every other row is at distance 0
    return np.asarray(picks, dtype=np.int64), np.asarray(scores)


def uncertainty_picks(strategy: Strategy, probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most uncertain rows of (N, C) ``probs`` by ``entropy`` or ``margin``, and their scores."""
    scores = entropy_scores(probs) if strategy == "entropy" else margin_scores(probs)
    picks = top_k(scores, k)
    return picks, scores[picks]
