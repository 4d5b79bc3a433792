"""Seeded, stratified splits and subsets."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

T = TypeVar("T")


def holdout_split(
    rows: Sequence[T], stratify: Sequence[str] | None = None, test_size: float = 0.2, seed: int = 0
) -> tuple[list[T], list[T]]:
    """Seeded (train, test) rows in sklearn's shuffled order, label proportions kept when ``stratify``.

    The shuffled order is part of the result: the shipped datasets are written in it, so changing
    it (e.g. sorting) would change every prepared file.
    """
    train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=stratify)
    return train, test


def three_way_split(
    n: int, stratify: Sequence[str] | None = None, seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Seeded 80/10/10 (train, dev, test) indices of ``n`` rows, stratified when labels are given.

    Two holdout splits (80/20, then the 20 halved) rather than one shuffle cut in three, so dev and
    test each keep the label proportions.
    """
    train, rest = holdout_split(list(range(n)), stratify, 0.2, seed)
    rest_labels = [stratify[i] for i in rest] if stratify is not None else None
    dev, test = holdout_split(rest, rest_labels, 0.5, seed)
    return train, dev, test


def stratified_split(labels: Sequence[str], ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, dev) with ``ratio`` of rows in dev, label proportions kept.

    Falls back to a plain seeded split (with a warning) when some label has fewer than two rows,
    because stratification is impossible then.
    """
    counts = Counter(labels)
    stratify: Sequence[str] | None = labels
    if min(counts.values()) < 2 or round(len(labels) * ratio) < len(counts):
        warnings.warn(
            "some labels are too rare to stratify the dev split; using a plain random split", stacklevel=2
        )
        stratify = None
    train, dev = holdout_split(list(range(len(labels))), stratify, ratio, seed)
    return sorted(train), sorted(dev)


def subsample(n_rows: int, limit: int | None, seed: int) -> list[int]:
    """Seeded random subset of row indices (all rows, in order, when ``limit`` is unset or large)."""
    if limit is None or limit >= n_rows:
        return list(range(n_rows))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_rows, size=limit, replace=False).tolist())


def k_shot(labels: Sequence[str], k: int, seed: int) -> list[int]:
    """Sorted indices of ``k`` rows per label, drawn without replacement by a seeded RNG.

    Pure: the same labels, ``k`` and seed always give the same rows. A label with fewer than ``k``
    rows keeps all of them (with a warning), since inventing rows is not an option; ``k=0`` keeps none.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    chosen: list[int] = []
    for label in sorted(by_label):
        rows = by_label[label]
        if len(rows) < k:
            warnings.warn(
                f"label {label!r} has only {len(rows)} rows for k_shot={k}; keeping all", stacklevel=2
            )
        chosen += rng.choice(rows, size=min(k, len(rows)), replace=False).tolist()
    return sorted(chosen)
