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
    ("sizes", "world_size"), [([8, 8, 3], 1), ([8, 8, 5], 2), ([9, 7], 3), ([12, 2], 4), ([1], 3)]
)
def test_shard_batches_split_every_global_batch_across_the_ranks(sizes: list[int], world_size: int) -> None:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    batches = [list(range(start, start + size)) for start, size in zip(starts, sizes, strict=True)]

    shards = [shard_batches(batches, rank, world_size) for rank in range(world_size)]

    for step, batch in enumerate(batches):
        parts = [shard[step] for shard in shards]
        assert all(parts), "every rank steps"
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        if len(batch) >= world_size:
            assert [row for part in parts for row in part] == batch  # contiguous, in order, disjoint
        else:
            assert {row for part in parts for row in part} == set(batch)


def test_shard_batches_of_the_global_batch_equal_one_process_with_the_global_batch() -> None:
    lengths = [(i * 7) % 23 + 1 for i in range(100)]
    one = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)

    shards = [shard_batches(one, rank, 2) for rank in range(2)]

    assert [a + b for a, b in zip(*shards, strict=True)] == one


def test_eval_order_longest_first_and_stable() -> None:
    lengths = [3, 9, 1, 9, 5, 3]

    order = eval_order(lengths).tolist()

    assert order == [1, 3, 4, 0, 5, 2]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
