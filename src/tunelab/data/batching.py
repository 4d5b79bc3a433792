"""Batch order for training and evaluation: length-grouped, seeded, resumable, rank-sharded.

The training order is a pure function of (seed, epoch), never of the global RNG, so a resumed run
can rebuild the exact remaining batches of an interrupted epoch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

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
    """This rank's batches; every rank gets the same count (the tail wraps around) so steps stay in sync."""
    if world_size == 1:
        return batches
    per_rank = -(-len(batches) // world_size)
    padded = list(itertools.islice(itertools.cycle(batches), per_rank * world_size))
    return padded[rank::world_size]


def eval_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices sorted longest first: evaluation pads least this way; outputs are put back afterwards."""
    return np.argsort(-np.asarray(lengths), kind="stable")
