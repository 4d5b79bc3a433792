"""Batched no-grad inference: length-sorted batches, sharded across processes, gathered in order."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader

from tunelab.data.batching import eval_order


def _forward_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "labels"}


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    features: Any,
    collator: Any,
    batch_size: int,
    accelerator: Accelerator | None = None,
) -> np.ndarray:
    """Logits for every row of ``features`` (a tokenised ``datasets.Dataset``), in the original row order.

    Rows are processed longest first so each batch pads little; with several processes each takes a
    shard and ``gather_for_metrics`` drops the padding duplicates.
    """
    order = eval_order([len(ids) for ids in features["input_ids"]])
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    loader = DataLoader(features, batch_sampler=batches, collate_fn=collator, generator=torch.Generator())
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    if accelerator is not None and accelerator.num_processes > 1:
        loader = prepare_data_loader(
            loader, device, accelerator.num_processes, accelerator.process_index, put_on_device=True
        )
    was_training = model.training
    model.eval()
    chunks = []
    for batch in loader:
        logits = model(**_forward_inputs(send_to_device(batch, device))).logits.float()
        if accelerator is not None:
            logits = accelerator.gather_for_metrics(logits)
        chunks.append(logits.cpu().numpy())
    model.train(was_training)
    sorted_logits = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    out = np.empty_like(sorted_logits)
    out[order] = sorted_logits
    return out
