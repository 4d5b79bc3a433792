"""Batch order for training and evaluation: length-grouped, seeded, resumable, rank-sharded.

The training order is a pure function of (seed, epoch), never of the global RNG, so a resumed run
can rebuild the exact remaining batches of an interrupted epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MEGABATCH_FACTOR = 50  # batches per length-sorted pool, as in transformers' LengthGroupedSampler


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool = True,
) -> list[list[int]]:
    """All batches of one epoch, in order, for the whole (global) dataset.

    With ``group_by_length`` the shuffled indices are cut into pools of ``MEGABATCH_FACTOR`` batches,
    each pool is sorted by length (less padding), and the batch order is shuffled again so long and
    short batches stay mixed across the epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        lens = np.asarray(lengths)[order]
        pool = batch_size * MEGABATCH_FACTOR
        order = np.concatenate(
            [
                order[s : s + pool][np.argsort(-lens[s : s + pool], kind="stable")]
                for s in range(0, len(order), pool)
            ]
        )
    batches = [order[s : s + batch_size].tolist() for s in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's part of each global batch: contiguous, the ranks' parts within one row in size.

    The caller cuts the epoch into global batches of ``processes x batch_size`` rows
    (``epoch_batches``), so N processes take exactly the steps of one process with an N times larger
    batch, length grouping included, and a checkpoint resumes under another process count at the
    same global batch. A global batch with fewer rows than ranks (an epoch's tail) gives each rank
    without a row of its own one of the batch's rows again, so every rank steps.
    """
    if world_size == 1:
        return batches
    shards = []
    for batch in batches:
        if len(batch) < world_size:
            shards.append([batch[rank % len(batch)]])
            continue
        size, extra = divmod(len(batch), world_size)
        start = rank * size + min(rank, extra)
        shards.append(batch[start : start + size + (rank < extra)])
    return shards


def eval_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices sorted longest first: evaluation pads least this way; outputs are put back afterwards."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def row_lengths(features: Any) -> list[int]:
    """Tokens per row (``input_ids``) of a ``datasets.Dataset`` or a list of feature dicts.

    Rows without token ids (images, whose ``pixel_values`` all have one size) count as length 1 each:
    there is nothing to group by, and batches are then plain seeded shuffles.
    """
    if isinstance(features, list):
        return [len(row["input_ids"]) if "input_ids" in row else 1 for row in features]
    if "input_ids" not in features.column_names:
        return [1] * len(features)
    return [len(ids) for ids in features["input_ids"]]
