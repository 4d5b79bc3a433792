"""Batched no-grad inference: length-sorted batches, sharded across processes, gathered in row order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device
from torch.utils.data import DataLoader

from tunelab.data.batching import eval_order


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    features: Any,
    collator: Any,
    batch_size: int,
    accelerator: Accelerator | None = None,
) -> np.ndarray:
    """Logits for every row of ``features``, in the original row order.

    ``features`` is a tokenised ``datasets.Dataset`` or a list of feature dicts (what the server
    builds per micro-batch: a ``Dataset`` costs milliseconds to build, more than a small forward).

    Rows are processed longest first so each batch pads little. With several processes each takes
    every n-th batch and one ``gather_object`` at the end reassembles rows by index, so no rank pads
    or duplicates rows (accelerate's even-batches padding cannot be undone for batch-sampler loaders).
    The forward runs on the unwrapped module, so uneven batch counts per rank cannot deadlock.
    """
    order = eval_order(_lengths(features))
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = batches[rank::world]
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    if accelerator is not None:
        # A DDP wrapper syncs buffers in every forward; ranks run different numbers of eval batches.
        model = accelerator.unwrap_model(model)
    loader = DataLoader(features, batch_sampler=mine, collate_fn=collator, generator=torch.Generator())
    was_training = model.training
    model.eval()
    pieces: list[tuple[list[int], np.ndarray]] = []
    for rows, batch in zip(mine, loader, strict=False):
        inputs = {k: v for k, v in send_to_device(batch, device).items() if k != "labels"}
        pieces.append((rows, model(**inputs).logits.float().cpu().numpy()))
    model.train(was_training)
    if world > 1:
        pieces = gather_object(pieces)
    if not pieces:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.empty((len(order), *pieces[0][1].shape[1:]), dtype=np.float32)
    for rows, logits in pieces:
        out[rows] = logits
    return out


def _lengths(features: Any) -> list[int]:
    """Tokens per row, by column access for a ``Dataset`` (fast) or per row for a list of dicts."""
    if isinstance(features, list):
        return [len(row["input_ids"]) for row in features]
    return [len(ids) for ids in features["input_ids"]]


class Predictable(Protocol):
    """What turning raw texts into predictions needs; a loaded ``export.artifact.Artifact`` is one."""

    model: torch.nn.Module
    tokenizer: Any
    task: Any
    task_params: Any
    labels: list[str]


def predict_texts(model: Predictable, texts: Sequence[str], batch_size: int) -> list[dict[str, Any]]:
    """Raw texts -> the task's JSON-able predictions, in input order: the one path for CLI and server."""
    features = model.task.preprocess({"text": list(texts)}, model.tokenizer, model.task_params, {})
    rows = [dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)]
    logits = predict_logits(model.model, rows, model.task.collator(model.tokenizer), batch_size)
    return model.task.postprocess(logits, model.labels, model.task_params)
