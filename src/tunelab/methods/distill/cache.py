"""Offline teacher logits: top-k values and indices per example, computed once before training.

Rows are addressed by a 64-bit hash of their unpadded input ids, so batches in any order (and on any
rank) find their teacher logits without an example id travelling through the loop. The teacher runs
over :func:`fixed_batches` (longest rows first, 32 a batch), which depend on the rows alone, never on
the training order or on a resume, so a resumed run reads the same logits. Distillation keeps them in
one safetensors file whose name is a hash of (teacher weights, every training row, k): a changed
teacher or dataset writes a new file instead of reading stale logits. Self-training's fixed teacher
keeps them in memory, every class of every unlabelled row (:meth:`TeacherCache.dense_logits`).
Sequence-level tasks store one row of k per example; token-level tasks store one per attended token,
in order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn
from torch.utils.data import DataLoader

from tunelab.data.batching import eval_order, row_lengths
from tunelab.errors import DataError
from tunelab.io import atomic_write

logger = logging.getLogger(__name__)

TeacherFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]
BATCH_ROWS = 32  # rows per teacher forward while the cache is built


def row_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[int]:
    """One signed 64-bit key per row: blake2b of the row's attended token ids."""
    ids, mask = input_ids.cpu().long(), attention_mask.cpu().bool()
    return [
        int.from_bytes(
            hashlib.blake2b(row[m].numpy().tobytes(), digest_size=8).digest(), "little", signed=True
        )
        for row, m in zip(ids, mask, strict=True)
    ]


def cache_path(cache_dir: Path, teacher_fp: str, features: Iterable[list[int]], top_k: int) -> Path:
    """``cache_dir/teacher-<hash>.safetensors`` for this teacher, these training rows and k."""
    digest = hashlib.sha256(f"{teacher_fp}:{top_k}:".encode())
    for ids in features:
        digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
        digest.update(b"|")
    return cache_dir / f"teacher-{digest.hexdigest()[:24]}.safetensors"


def fixed_batches(features: Any, collator: Callable[[list[Any]], Any]) -> DataLoader[Any]:
    """Every row of ``features`` (a ``Dataset`` or a list of feature dicts), ``BATCH_ROWS`` a batch.

    Longest first (little padding): the order depends on the rows' lengths alone, so a row's teacher
    logits do not depend on how training later orders or resumes its batches.
    """
    order = eval_order(row_lengths(features))
    sampler = [order[i : i + BATCH_ROWS].tolist() for i in range(0, len(order), BATCH_ROWS)]
    # Own generator: iterating a DataLoader draws a seed from it, and the global RNG drives dropout.
    return DataLoader(features, batch_sampler=sampler, collate_fn=collator, generator=torch.Generator())


class TeacherCache(nn.Module):
    """Top-k teacher logits looked up by row content; buffers move with ``.to(device)``.

    Buffers: ``keys`` (R,) int64 row hashes, ``counts`` (R,) entries per row (1, or the row's attended
    tokens), ``offsets`` (R,) first entry of each row, ``values`` (n, k) fp32 logits, ``indices`` (n, k).
    """

    keys: torch.Tensor
    counts: torch.Tensor
    offsets: torch.Tensor
    values: torch.Tensor
    indices: torch.Tensor

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        for name in ("keys", "counts", "values", "indices"):
            self.register_buffer(name, tensors[name], persistent=False)
        self.register_buffer("offsets", torch.cumsum(self.counts, 0) - self.counts, persistent=False)
        self.row_of = {int(k): i for i, k in enumerate(self.keys.tolist())}

    def lookup(
        self, batch: Mapping[str, torch.Tensor], token_level: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher (values, indices) for the batch: (B, k), or (B, T, k) for token-level logits."""
        mask = batch["attention_mask"]
        keys = row_keys(batch["input_ids"], mask)
        missing = [i for i, k in enumerate(keys) if k not in self.row_of]
        if missing:
            raise DataError(
                f"{len(missing)} row(s) of this batch are not in the teacher cache (the rows changed "
                "after it was built, e.g. by augmentation); delete the cache file or turn the cache off"
            )
        rows = torch.tensor([self.row_of[k] for k in keys], device=self.counts.device)
        counts, starts = self.counts[rows], self.offsets[rows]
        # Flat positions of every cached entry of these rows, in row order (no loop over tokens).
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        flat = (
            torch.repeat_interleave(starts, counts)
            + torch.arange(int(counts.sum()), device=counts.device)
            - first
        )
        values, indices = self.values[flat], self.indices[flat]  # (n, k)
        if not token_level:
            return values, indices
        attended = mask.bool()
        out_v = values.new_zeros((*mask.shape, values.shape[-1]))
        out_i = indices.new_zeros((*mask.shape, indices.shape[-1]))
        out_v[attended], out_i[attended] = values, indices
        return out_v, out_i

    def dense_logits(self, batch: Mapping[str, torch.Tensor], classes: int) -> torch.Tensor:
        """The teacher's (B, classes) logits in class order, from a cache of every class (k = classes)."""
        values, indices = self.lookup(batch, token_level=False)
        assert values.shape[-1] == classes, "a cache built with top_k = the number of classes"
        return values.new_empty(values.shape).scatter_(-1, indices, values)


@torch.no_grad()
def build_cache(
    teacher: TeacherFn, batches: Iterable[dict[str, torch.Tensor]], top_k: int
) -> dict[str, torch.Tensor]:
    """Run the teacher over ``batches`` once; keep each example's (or attended token's) top-k logits."""
    keys, counts, values, indices = [], [], [], []
    for batch in batches:
        logits = teacher(batch)  # (B, C) or (B, T, C)
        top = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
        mask = batch["attention_mask"].bool()
        keys += row_keys(batch["input_ids"], mask)
        if logits.dim() == 3:
            counts.append(mask.sum(1))
            values.append(top.values[mask])
            indices.append(top.indices[mask])
        else:
            counts.append(torch.ones(len(logits), dtype=torch.long))
            values.append(top.values)
            indices.append(top.indices)
    return {
        "keys": torch.tensor(keys, dtype=torch.int64),
        "counts": torch.cat(counts).long().cpu(),
        "values": torch.cat(values).float().cpu(),
        "indices": torch.cat(indices).long().cpu(),
    }


def load_or_build(
    path: Path, teacher: TeacherFn, batches: Iterable[dict[str, torch.Tensor]], top_k: int
) -> TeacherCache:
    """The cache at ``path``, built (teacher forward over every batch) and written atomically if absent.

    ``batches`` is iterated only when the cache is built (a ``DataLoader`` collates lazily).
    """
    if path.is_file():
        logger.info("distill: teacher logits from %s", path)
        return TeacherCache(load_file(path))
    tensors = build_cache(teacher, batches, top_k)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(tensors, metadata={"top_k": str(top_k)}))
    logger.info("distill: teacher logits of %d rows cached in %s", len(tensors["keys"]), path)
    return TeacherCache(tensors)
