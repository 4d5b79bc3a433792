"""Batched no-grad inference: length-sorted batches, sharded across processes, gathered in row order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device
from torch.utils.data import DataLoader

from tunelab.data.batching import eval_order, row_lengths
from tunelab.inference.continuous import generate_records
from tunelab.inference.generate import GenerationOptions, generate_ids
from tunelab.tasks.spec import OUTPUT_PAD, Predicted, TaskSpec

EVAL_SEED = 1234
Piece = tuple[list[int], dict[str, np.ndarray], float, int]  # rows, arrays, summed loss, target count


@dataclass(frozen=True)
class Outputs:
    """Gathered model outputs of a split: named (n_rows, ...) arrays and the mean loss over targets."""

    arrays: dict[str, np.ndarray]
    loss: float | None  # None when the rows carry no targets


@torch.no_grad()
def predict_outputs(
    model: torch.nn.Module,
    task: TaskSpec,
    features: Any,
    collator: Any,
    batch_size: int,
    accelerator: Accelerator | None = None,
    params: Any = None,
) -> Outputs:
    """The task's outputs for every row of ``features``, in the original row order, and the eval loss.

    ``features`` is a tokenised ``datasets.Dataset`` or a list of feature dicts (what the server
    builds per micro-batch: a ``Dataset`` costs milliseconds to build, more than a small forward).

    Rows are processed longest first so each batch pads little. With several processes each takes
    every n-th batch and one ``gather_object`` at the end reassembles rows by index, so no rank pads
    or duplicates rows (accelerate's even-batches padding cannot be undone for batch-sampler loaders).
    The forward runs on the unwrapped module, so uneven batch counts per rank cannot deadlock.
    Targets (``task.target_keys``) stay out of the forward; ``task.loss_terms`` scores them, so the
    loss is the mean over every target of the split whatever the batch size or process count.
    A generating task (``task.generation``, given ``params``) adds its generated arrays; rows without
    targets then skip the forward.
    """
    order = eval_order(row_lengths(features))
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
    pieces: list[Piece] = []
    with torch.random.fork_rng(devices=[]):  # a stochastic collator (MLM masks) draws the same numbers
        torch.manual_seed(EVAL_SEED)  # at every evaluation, and training's RNG stream is left untouched
        for rows, batch in zip(mine, loader, strict=False):
            batch = send_to_device(batch, device)
            inputs = {k: v for k, v in batch.items() if k not in task.target_keys}
            named, terms = {}, None
            if task.generation is None or any(k in batch for k in task.target_keys):
                out = model(**inputs)
                named, terms = task.outputs(out, batch), task.loss_terms(out, batch)
            if task.generation is not None:
                named = {**named, **generate_ids(model, inputs, task.generation(params))}
            arrays = {name: t.float().cpu().numpy() for name, t in named.items()}
            total, count = (0.0, 0) if terms is None else (float(terms[0]), int(terms[1]))
            pieces.append((rows, arrays, total, count))
    model.train(was_training)
    if world > 1:
        pieces = gather_object(pieces)
    count = sum(piece[3] for piece in pieces)
    return Outputs(
        arrays=_assemble(pieces, len(order)),
        loss=sum(piece[2] for piece in pieces) / count if count else None,
    )


def _assemble(
    pieces: Sequence[tuple[list[int], dict[str, np.ndarray], float, int]], n: int
) -> dict[str, Any]:
    """Per-batch arrays -> one (n, ...) array per name, rows in original order.

    Batches differ in padded length along token axes, so every axis after the first is padded to the
    largest batch with ``OUTPUT_PAD``.
    """
    if not pieces:
        return {}
    out: dict[str, np.ndarray] = {}
    for name in pieces[0][1]:
        parts = [(rows, arrays[name]) for rows, arrays, _, _ in pieces]
        shape = np.max([a.shape[1:] for _, a in parts], axis=0) if parts[0][1].ndim > 1 else ()
        full = np.full((n, *shape), OUTPUT_PAD, dtype=np.float32)
        for rows, array in parts:
            index: tuple[list[int] | slice, ...] = (rows, *(slice(0, d) for d in array.shape[1:]))
            full[index] = array
        out[name] = full
    return out


class Predictable(Protocol):
    """What turning raw records into predictions needs; a loaded ``inference.artifact.Artifact`` is one."""

    model: torch.nn.Module
    tokenizer: Any
    task: TaskSpec
    task_params: Any
    labels: list[str]


def predict_records(
    model: Predictable,
    records: Sequence[Mapping[str, Any]],
    batch_size: int,
    generation: GenerationOptions | None = None,
    on_text: Callable[[int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Raw input records (``task.input_fields``) -> JSON-able predictions, in input order.

    The one prediction path: CLI ``predict``, the server and the round-trip tests all come here. A
    generating task (``TaskSpec.generation_prompt``) answers with generated text, decoded as
    ``generation`` says (greedy by default); ``on_text(i, piece)`` then receives it as it is decoded.
    """
    task = model.task
    if task.generation_prompt is not None:
        return generate_records(model, records, generation or GenerationOptions(), batch_size, on_text)
    examples = {name: [record[name] for record in records] for name in task.input_fields}
    examples.update({name: [record.get(name) for record in records] for name in task.input_options})
    batch = {**examples, "example_id": list(range(len(records)))}
    if task.predict_preprocess is not None:
        features = task.predict_preprocess(batch, model.tokenizer, model.task_params)
    else:
        features = task.preprocess(batch, model.tokenizer, model.task_params, {})
    rows = [dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)]
    collator = task.collator(model.tokenizer, model.task_params)
    outputs = predict_outputs(model.model, task, rows, collator, batch_size, params=model.task_params)
    return task.postprocess(
        Predicted(outputs.arrays, features, examples, model.labels, model.task_params, model.tokenizer)
    )
