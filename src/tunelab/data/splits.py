"""Seeded, stratified splits and subsets."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)


def stratified_split(labels: Sequence[str], ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, dev) with ``ratio`` of rows in dev, label proportions kept.

    Falls back to a plain seeded split (with a warning) when some label has fewer than two rows,
    because stratification is impossible then.
    """
    indices = np.arange(len(labels))
    counts = Counter(labels)
    stratify: Sequence[str] | None = labels
    if min(counts.values()) < 2 or round(len(labels) * ratio) < len(counts):
        warnings.warn(
            "some labels are too rare to stratify the dev split; using a plain random split", stacklevel=2
        )
        stratify = None
    train, dev = train_test_split(indices, test_size=ratio, random_state=seed, stratify=stratify)
    return sorted(train.tolist()), sorted(dev.tolist())


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
