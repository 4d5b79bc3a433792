"""Training batch order: complete, seeded per (seed, epoch), length-grouped, evenly sharded."""

from __future__ import annotations

import numpy as np
import pytest

from tunelab.data.batching import epoch_batches, eval_order, shard_batches


def _lengths(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(1, 512, size=n).tolist()


def _padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize(("n", "batch_size"), [(1, 4), (37, 8), (1000, 16), (2000, 7)])
def test_epoch_batches_cover_every_index_once(n: int, batch_size: int, group_by_length: bool) -> None:
    batches = epoch_batches(_lengths(n), batch_size, seed=1, epoch=0, group_by_length=group_by_length)

    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    assert len(batches) == -(-n // batch_size)
    assert all(len(b) <= batch_size for b in batches)
    assert sum(len(b) < batch_size for b in batches) <= 1


@pytest.mark.parametrize("group_by_length", [True, False])
def test_epoch_batches_deterministic_in_seed_and_epoch(group_by_length: bool) -> None:
    lengths = _lengths(500)

    def run(seed: int, epoch: int) -> list[list[int]]:
        return epoch_batches(lengths, 8, seed=seed, epoch=epoch, group_by_length=group_by_length)

    assert run(3, 0) == run(3, 0)
    assert run(3, 1) == run(3, 1)
    assert run(3, 0) != run(3, 1)
    assert run(3, 0) != run(4, 0)


def test_epoch_batches_ignore_global_rng() -> None:
    lengths = _lengths(200)
    np.random.seed(0)
    first = epoch_batches(lengths, 8, seed=3, epoch=2)
    np.random.seed(1)

    assert epoch_batches(lengths, 8, seed=3, epoch=2) == first


def test_epoch_batches_group_by_length_cuts_padding() -> None:
    lengths = _lengths(3000, seed=5)

    grouped = _padding(epoch_batches(lengths, 16, seed=0, epoch=0, group_by_length=True), lengths)
    plain = _padding(epoch_batches(lengths, 16, seed=0, epoch=0, group_by_length=False), lengths)

    assert grouped < 0.1 * plain


def test_epoch_batches_group_by_length_still_mixes_batch_order() -> None:
    lengths = _lengths(3000, seed=5)

    batches = epoch_batches(lengths, 16, seed=0, epoch=0, group_by_length=True)

    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest != sorted(longest, reverse=True)
    assert longest != sorted(longest)


@pytest.mark.parametrize(
    ("n_batches", "world_size"),
    [(10, 1), (10, 2), (10, 3), (7, 4), (12, 4), (3, 2), (1, 2), (1, 3), (2, 5), (3, 8)],
)
def test_shard_batches_equal_count_and_full_cover(n_batches: int, world_size: int) -> None:
    batches = [[i] for i in range(n_batches)]

    shards = [shard_batches(batches, rank, world_size) for rank in range(world_size)]

    assert len({len(s) for s in shards}) == 1, [len(s) for s in shards]
    assert len(shards[0]) == -(-n_batches // world_size)
    assert {b[0] for s in shards for b in s} == set(range(n_batches))


def test_shard_batches_ranks_disjoint_when_divisible() -> None:
    batches = [[i] for i in range(12)]

    shards = [shard_batches(batches, rank, 4) for rank in range(4)]

    assert sorted(b[0] for s in shards for b in s) == list(range(12))


def test_eval_order_longest_first_and_stable() -> None:
    lengths = [3, 9, 1, 9, 5, 3]

    order = eval_order(lengths).tolist()

    assert order == [1, 3, 4, 0, 5, 2]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
