"""Dense retrieval: a bi-encoder fine-tuned with in-batch negatives ranks a stored candidate set.

Data (``tasks.retrieval.data``): (query, positive) rows; the candidates are every distinct positive of
train/dev/test plus ``corpus_file``, and they are the run's labels (label id = candidate index). The
model (``models.architectures.DualEncoder``) embeds queries and candidates with one shared BERT (mean
pooling, L2 norm) and stores the candidates' tokens with its weights, so a saved model answers
``tunelab predict`` and ``/v1/predict`` with its top-k candidates and no other file.

Training: a batch of B pairs is encoded as 2B rows (queries, then their positives); each query's
positive is its target among the batch's B positives (InfoNCE / MultipleNegativesRankingLoss, van den
Oord et al. 2018; Henderson et al. 2017), logits = ``scale`` x cosine, optionally symmetric (each
positive also picks its query). A batch column that is relevant to the row's query (the same positive
text, or a positive of the same query) is masked out instead of counted as a negative. Written on
tunelab's loop rather than through sentence-transformers' trainer so that every method, checkpoint
and export path applies; the loss itself is a few tensor ops.

Evaluation ranks each distinct dev/test query against all candidates (one matmul per query batch,
candidates embedded in chunks and cached), then scores the rank of each relevant candidate
(``ranking``): MRR, recall@1/5/10, NDCG@10.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tunelab.models.architectures import DualEncoder
from tunelab.tasks.retrieval import data, schema
from tunelab.tasks.retrieval.ranking import METRIC_NAMES, NO_GOLD, gold_ranks, ranking_metrics
from tunelab.tasks.spec import Batch, Features, Predicted, TaskSpec, has_column

PAIR = "positive_"  # prefix of a training pair's positive-text columns
ENCODER_KEYS = ("input_ids", "attention_mask", "token_type_ids")
TARGETS = ("gold_ids", "query_ids")
TOP_K_LIMIT = schema.TOP_K_LIMIT  # candidates each query's outputs keep (a request's top_k is at most this)


class Params(BaseModel):
    """Options of the retrieval task (validated from ``task.params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(
        default=128, gt=0, le=8192, description="Truncate queries and candidates to this many tokens."
    )
    scale: float = Field(
        default=20.0,
        gt=0,
        description="Logits = scale * cosine (1 / temperature); sentence-transformers' 20.",
    )
    symmetric: bool = Field(
        default=False, description="Also train each positive to pick its query among the batch's queries."
    )
    top_k: int = Field(
        default=5, gt=0, le=TOP_K_LIMIT, description="Candidates per prediction unless a request sets top_k."
    )
    corpus_file: Path | None = Field(
        default=None, description="Extra candidates: a .csv/.jsonl file with a text column; null = none."
    )


def model_config(params: Params) -> dict[str, Any]:
    """What the model needs besides the candidate texts, saved in config.json."""
    return {"similarity_scale": params.scale, "candidate_max_length": params.max_length}


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Tokenise the query; a training pair also its positive, an evaluation query its relevant ids."""
    out: Features = dict(tokenizer(batch["text"], truncation=True, max_length=params.max_length))
    if "positive" in batch:
        pair = tokenizer(batch["positive"], truncation=True, max_length=params.max_length)
        out.update({f"{PAIR}{key}": value for key, value in pair.items()})
        out["gold_ids"] = [[label2id[p]] for p in batch["positive"]]
        out["query_ids"] = batch["query_id"]
    elif "positives" in batch:
        out["gold_ids"] = [[label2id[p] for p in positives] for positives in batch["positives"]]
    return out


def collator(tokenizer: Any, params: Params) -> Any:
    """Pads rows; B training pairs become 2B encoder rows (queries, then positives) + their targets.

    One encoder forward per batch keeps every method's view of a batch plain ``input_ids`` rows.
    ``gold_ids`` is padded with ``NO_GOLD`` to the batch's most relevant candidates per query.
    """

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        queries = [{k: row[k] for k in ENCODER_KEYS if k in row} for row in rows]
        positives = [{k: row[PAIR + k] for k in ENCODER_KEYS if PAIR + k in row} for row in rows]
        batch = dict(tokenizer.pad(queries + [p for p in positives if p], return_tensors="pt"))
        if "gold_ids" in rows[0]:
            width = max(len(row["gold_ids"]) for row in rows)
            gold = [row["gold_ids"] + [NO_GOLD] * (width - len(row["gold_ids"])) for row in rows]
            batch["gold_ids"] = torch.tensor(gold, dtype=torch.long)
        if "query_ids" in rows[0]:
            batch["query_ids"] = torch.tensor([row["query_ids"] for row in rows], dtype=torch.long)
        return batch

    return collate


def in_batch_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    relevant: torch.Tensor,
    params: Params,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """InfoNCE of (B, H) unit query / positive embeddings; ``relevant`` (B, B): column j is relevant to row i.

    Row i's target is column i; other relevant columns are masked out (neither negative nor target),
    also in the label-smoothing term, which spreads over the unmasked columns only.
    """
    logits = params.scale * queries @ positives.T  # (B, B)
    masked = relevant & ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)

    def one_way(logits: torch.Tensor) -> torch.Tensor:
        logp = logits.masked_fill(masked, float("-inf")).log_softmax(-1)
        nll = -logp.diagonal()
        if not label_smoothing:
            return nll.mean()
        spread = -logp.masked_fill(masked, 0.0).sum(-1) / (~masked).sum(-1)
        return ((1 - label_smoothing) * nll + label_smoothing * spread).mean()

    loss = one_way(logits)
    return (loss + one_way(logits.T)) / 2 if params.symmetric else loss


def loss(
    outputs: Any, batch: Mapping[str, torch.Tensor], params: Params, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The in-batch loss of a training batch (2B rows: B queries, then their B positives)."""
    n = len(batch["query_ids"])
    gold, query = batch["gold_ids"][:, 0], batch["query_ids"]
    relevant = (gold[:, None] == gold[None, :]) | (query[:, None] == query[None, :])  # (B, B)
    embeddings = outputs.embeddings
    return in_batch_loss(embeddings[:n], embeddings[n:], relevant, params, label_smoothing)


def count_pairs(batch: Mapping[str, torch.Tensor], params: Any) -> torch.Tensor:
    """Targets of a training batch: its pairs (half its encoder rows)."""
    return torch.tensor(len(batch["query_ids"]))


def outputs(out: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each query's top candidates (ids, cosines) and, with gold ids, the rank of each relevant one."""
    scores = out.scores  # (B, N)
    top_scores, top_ids = scores.topk(min(TOP_K_LIMIT, scores.shape[1]), dim=-1)
    named = {"top_ids": top_ids, "top_scores": top_scores}
    if "gold_ids" in batch:
        named["gold_ranks"] = gold_ranks(scores, batch["gold_ids"])
    return named


def loss_terms(out: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Summed cross-entropy of each relevant candidate against all candidates, and their count."""
    if "gold_ids" not in batch:
        return None
    gold = batch["gold_ids"]
    valid = gold != NO_GOLD
    logp = out.logits.float().log_softmax(-1).gather(1, gold.clamp(min=0))  # (B, P)
    return -(logp * valid).sum(), valid.sum()


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Per query: its ``top_k`` candidates (index, text, cosine score), best first.

    ``top_k`` is the record's own (a request's ``top_k``), else ``task.params.top_k``.
    """
    ids, scores = predicted.arrays["top_ids"].astype(np.int64), predicted.arrays["top_scores"]
    examples = predicted.examples
    asked = examples["top_k"] if examples is not None and has_column(examples, "top_k") else [None] * len(ids)
    out = []
    for row, k in enumerate(asked):
        top = min(k or predicted.params.top_k, ids.shape[1])
        hits = [
            {"index": int(i), "text": predicted.labels[i], "score": float(s)}
            for i, s in zip(ids[row, :top], scores[row, :top], strict=True)
        ]
        out.append({"hits": hits})
    return out


def metrics(predicted: Predicted) -> dict[str, Any]:
    """MRR, recall@1/5/10 and NDCG@10 over the split's queries (``ranking.ranking_metrics``)."""
    return {**ranking_metrics(predicted.arrays["gold_ranks"]), "n_candidates": len(predicted.labels)}


TASK = TaskSpec(
    name="retrieval",
    params=Params,
    model_class=DualEncoder,
    head_modules=(),
    metric_names=METRIC_NAMES,
    load_data=data.load_data,
    read_eval=data.read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
    input_options=("top_k",),
    outputs=outputs,
    loss_terms=loss_terms,
    target_keys=TARGETS,
    loss=loss,
    model_config=model_config,
    count_targets=count_pairs,
    serve_schema=schema.SERVE_SCHEMA,
    pipeline_tag="sentence-similarity",
    why_no_logits="its logits score a stored candidate set in eval mode and in-batch pairs in training",
    own_architecture=True,
)
