"""Per-word attributions of a prediction: integrated gradients (Captum) or attention rollout.

- **ig**: integrated gradients (Sundararajan et al. 2017) through Captum's
  ``LayerIntegratedGradients`` over the word-embedding layer. The baseline is the same row with every
  word token replaced by the padding token (special tokens kept), and the attributed function is the
  target's probability (softmax; sigmoid for a multi-label head), so a word's score is its share of
  ``p(input) - p(baseline)``, signed. All targets of one input and all ``steps`` interpolation points
  run as batched forwards (``internal_batch_size`` rows each); Captum reports the convergence delta.
- **rollout**: attention rollout (Abnar & Zuidema 2020): per layer the head-mean attention plus the
  identity (the residual stream), rows renormalised, multiplied through the layers; a word's score is
  the rolled-out attention from the target position (for a label per input, what its head pools:
  the first token, the mean of all, or a decoder's last non-pad one) to its pieces. One forward;
  unsigned and the same for every label.

Scores of a word's sub-word pieces are summed (``merge_pieces``), so the words shown to the user carry
the whole attribution and ig's scores still sum to the probability change. The task says what the words
and the model row are (``TaskSpec.explain_input``) and which words a token-level task explains by
default (``TaskSpec.explain_words``); Captum is imported here only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import torch
from captum.attr import LayerIntegratedGradients

from tunelab.errors import ConfigError
from tunelab.inference.predict import Predictable
from tunelab.methods.adversarial import input_embeddings
from tunelab.models.architectures import is_causal
from tunelab.models.int8 import is_int8
from tunelab.models.load import eager_attention
from tunelab.tasks.schemas import ExplainMethod
from tunelab.tasks.spec import Explainable, TaskSpec

MULTI_LABEL = "multi_label_classification"  # transformers' problem_type of a sigmoid head
# Interpolation points (Captum's default is 50): on a MiniLM sentiment run 32 kept the convergence
# delta well under 0.01 of probability (bench/RESULTS.md, "Explanations"), at 2/3 of the cost.
DEFAULT_STEPS = 32
IG_ROWS_PER_FORWARD = 64  # interpolated rows per forward + backward (Captum's internal_batch_size)


@dataclass(frozen=True)
class Target:
    """What one explanation attributes: ``label`` (an id) at word ``word`` (None: the input's label)."""

    label: int
    word: int | None = None


def explainable_task(task: TaskSpec) -> Callable[[Mapping[str, Any], Any, Any], Explainable]:
    """The task's ``explain_input``, or a ConfigError when its predictions cannot be explained."""
    if task.explain_input is None:
        raise ConfigError(
            f"task {task.name!r} cannot explain its predictions; explanations cover tasks that declare "
            "explain_input (classification, token_classification)"
        )
    return task.explain_input


def check_method(method: str) -> None:
    """Refuse a ``method`` that is not an explanation method (ConfigError naming the choices).

    Callers that load a model check it first, so a typo fails before any weight is read.
    """
    if method not in get_args(ExplainMethod):
        choices = " or ".join(get_args(ExplainMethod))
        raise ConfigError(f"method: {method!r} is not an explanation method; choose {choices}")


def explain_refusal(model: torch.nn.Module, method: str) -> str | None:
    """Why ``model`` cannot be explained with ``method``, or None."""
    if method == "ig" and is_int8(model):
        return (
            "ig needs gradients, which an int8 model's quantized layers do not have; use rollout, or "
            "explain the fp32 model the int8 export came from"
        )
    return None


def merge_pieces(scores: np.ndarray, word_ids: Sequence[int], n_words: int) -> np.ndarray:
    """(K, T) per-token scores -> (K, n_words): each word the sum of its pieces; special tokens dropped."""
    ids = np.asarray(word_ids)
    keep = ids >= 0
    onehot = np.zeros((len(ids), n_words), dtype=np.float64)  # (T, W)
    onehot[np.flatnonzero(keep), ids[keep]] = 1.0
    return scores.astype(np.float64) @ onehot


def _tensors(rows: Sequence[Mapping[str, list[int]]], tokenizer: Any, device: torch.device) -> dict[str, Any]:
    """Rows of features -> one right-padded tensor batch on ``device``."""
    batch = tokenizer.pad([dict(row) for row in rows], padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def _probabilities(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Softmax over labels, or per-label sigmoid for a multi-label head."""
    if getattr(getattr(model, "config", None), "problem_type", None) == MULTI_LABEL:
        return logits.float().sigmoid()
    return logits.float().softmax(-1)


def _position(ex: Explainable, word: int | None) -> int:
    """The token whose logits predict ``word``'s tag (its first piece); 0 (first token) for None."""
    if word is None:
        return 0
    pieces = [i for i, w in enumerate(ex.word_ids) if w == word]
    if not pieces:
        raise ConfigError(
            f"word {word}: the input has {len(ex.words)} words and the model reads the first "
            f"{max(ex.word_ids) + 1} of them; choose a word index below that"
        )
    return pieces[0]


def _pooled_row(model: torch.nn.Module, rolled: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(T, T) rollout -> (T,) rollout of what a label-per-input head reads in the (1, T) row.

    The first token's row by default; the mean of all rows where the config pools the mean
    (ModernBERT's ``classifier_pooling: mean``); a decoder's last non-pad row: transformers' decoder
    classifiers (GPT-2, Llama... ``ForSequenceClassification``) pool the last token that is not
    ``config.pad_token_id``, as under causal attention only it has seen the whole input.
    """
    config = getattr(model, "config", None)
    if config is None:
        return rolled[0]
    if getattr(config, "classifier_pooling", None) == "mean":
        return rolled.mean(0)
    if not is_causal(config):
        return rolled[0]
    ids = input_ids[0]
    kept = (ids != config.pad_token_id).nonzero() if config.pad_token_id is not None else ids.new_empty(0)
    return rolled[int(kept.max()) if len(kept) else len(ids) - 1]


def _gather(probs: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, C) or (B, T, C) probabilities -> (B,) of each row's target (at its position when per token)."""
    rows = torch.arange(len(labels), device=probs.device)
    return probs[rows, labels] if probs.ndim == 2 else probs[rows, positions, labels]


def target_probabilities(
    art: Predictable, items: Sequence[tuple[Mapping[str, Any], Target]], batch_size: int = 32
) -> np.ndarray:
    """(N,) probability of each item's target on its record, rows batched ``batch_size`` at a time."""
    explain_input = explainable_task(art.task)
    model, device = art.model, next(art.model.parameters()).device
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        inputs = [explain_input(record, art.tokenizer, art.task_params) for record, _ in chunk]
        batch = _tensors([ex.features for ex in inputs], art.tokenizer, device)
        positions = torch.tensor([_position(ex, t.word) for ex, (_, t) in zip(inputs, chunk, strict=True)])
        labels = torch.tensor([t.label for _, t in chunk])
        with torch.no_grad():
            probs = _probabilities(model, model(**batch).logits)
        out.append(_gather(probs, positions.to(device), labels.to(device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _integrated_gradients(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    ex: Explainable,
    targets: Sequence[Target],
    steps: int,
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(K, T) token attributions of each target and (K,) convergence deltas; one batched Captum call."""
    why = explain_refusal(model, "ig")
    if why is not None:
        raise ConfigError(f"method: {why}")
    names = [k for k in batch if k != "input_ids"]
    k = len(targets)
    ids = batch["input_ids"].expand(k, -1)  # (K, T): one row per target
    special = torch.tensor(ex.word_ids, device=ids.device) < 0
    baseline = torch.where(special, ids, torch.full_like(ids, pad_id))
    positions = torch.tensor([_position(ex, t.word) for t in targets], device=ids.device)
    labels = torch.tensor([t.label for t in targets], device=ids.device)

    def target_probability(input_ids: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        probs = _probabilities(
            model, model(input_ids=input_ids, **dict(zip(names, others, strict=True))).logits
        )
        reps = len(input_ids) // k  # Captum stacks interpolation steps, each holding the K target rows
        return _gather(probs, positions.repeat(reps), labels.repeat(reps))

    lig = LayerIntegratedGradients(target_probability, input_embeddings(model))
    with torch.enable_grad():
        attributions, delta = lig.attribute(
            ids,
            baselines=baseline,
            additional_forward_args=tuple(batch[name].expand(k, -1) for name in names),
            n_steps=steps,
            internal_batch_size=max(k, min(steps * k, IG_ROWS_PER_FORWARD)),
            return_convergence_delta=True,
        )
    scores = attributions.sum(-1).detach().cpu().numpy()  # (K, T, E) -> (K, T)
    return scores, delta.detach().cpu().numpy()


def _rollout(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], ex: Explainable, targets: Sequence[Target]
) -> np.ndarray:
    """(K, T) attention rollout from each target's position to every token."""
    with torch.no_grad(), eager_attention(model):
        attentions = model(**batch, output_attentions=True).attentions
    mixed = torch.stack([a[0].float().mean(0) for a in attentions])  # (L, H, T, T) -> (L, T, T)
    eye = torch.eye(mixed.shape[-1], device=mixed.device)
    mixed = 0.5 * mixed + 0.5 * eye  # the residual connection carries half of each token through
    mixed = mixed / mixed.sum(-1, keepdim=True)
    rolled = eye
    for layer in mixed:  # layers in order: rollout(l) = A(l) @ rollout(l - 1)
        rolled = layer @ rolled
    pooled = _pooled_row(model, rolled, batch["input_ids"])
    rows = [pooled if t.word is None else rolled[_position(ex, t.word)] for t in targets]
    return torch.stack(rows).cpu().numpy()  # (K, T)


def explain_one(
    art: Predictable,
    record: Mapping[str, Any],
    prediction: Mapping[str, Any],
    method: str = "ig",
    target: str | None = None,
    word: int | None = None,
    steps: int = DEFAULT_STEPS,
) -> list[dict[str, Any]]:
    """Explanations (``tasks.schemas.Explanation`` dicts) of one record's prediction.

    A label-per-input task explains ``target`` (default: the predicted label). A token-level task
    explains the tag of ``word`` (default: each word ``TaskSpec.explain_words`` picks from the
    prediction, e.g. every entity's first word), ``target`` or else the predicted one; a record
    without such words gets no explanation. ``words`` lists the words the model read: an input
    longer than the task's ``max_length`` is explained on its first chunk.

    Raises:
        ConfigError: the task cannot explain, ``target`` is not a label, ``word`` is out of range,
            or ig is asked of an int8 model.
    """
    check_method(method)
    task, model = art.task, art.model
    ex = explainable_task(task)(record, art.tokenizer, art.task_params)
    if target is not None and target not in art.labels:
        raise ConfigError(f"target: {target!r} is not a label of this model; labels: {', '.join(art.labels)}")
    if task.explain_words is None:
        words: list[int | None] = [None]
    else:
        words = [word] if word is not None else list(task.explain_words(prediction))
    if not words:
        return []
    batch = _tensors([ex.features], art.tokenizer, next(model.parameters()).device)
    with torch.no_grad():
        probs = _probabilities(model, model(**batch).logits)[0]  # (C,) or (T, C)
    rows = [probs if w is None else probs[_position(ex, w)] for w in words]
    targets = [
        Target(art.labels.index(target) if target is not None else int(row.argmax()), w)
        for row, w in zip(rows, words, strict=True)
    ]
    deltas: Sequence[float | None]
    if method == "ig":
        pad_id = art.tokenizer.pad_token_id if art.tokenizer.pad_token_id is not None else 0
        scores, found = _integrated_gradients(model, batch, ex, targets, steps, pad_id)
        deltas = [float(d) for d in found]
    else:  # rollout
        scores, deltas = _rollout(model, batch, ex, targets), [None] * len(targets)
    seen = max(ex.word_ids, default=-1) + 1  # words past the model's max_length get no attribution
    merged = merge_pieces(scores, ex.word_ids, seen)
    return [
        {
            "target": art.labels[t.label],
            "word": t.word,
            "probability": float(row[t.label]),
            "method": method,
            "words": [
                {"text": text, "start": start, "end": end, "score": float(score)}
                for text, (start, end), score in zip(ex.words[:seen], ex.spans[:seen], merged[i], strict=True)
            ],
            "convergence_delta": deltas[i],
        }
        for i, (t, row) in enumerate(zip(targets, rows, strict=True))
    ]
