"""Ranking metrics from the rank of each relevant candidate: recall@k, NDCG@10, MRR.

Every scorer (the bi-encoder, BM25, any baseline) reduces to one matrix of candidate scores per query;
``gold_ranks`` turns it into the 1-based rank of each relevant candidate and ``ranking_metrics`` scores
those ranks, so all of them are measured by the same code. Hand-written because the metrics need only
the ranks of the relevant items (a few per query), not the full ranked list that e.g. sklearn's
``ndcg_score`` takes; the tests check both against sklearn and a brute-force loop.
"""

from __future__ import annotations

import numpy as np
import torch

RECALL_AT = (1, 5, 10)
NDCG_AT = 10
METRIC_NAMES = ("mrr", *(f"recall@{k}" for k in RECALL_AT), f"ndcg@{NDCG_AT}")
NO_GOLD = -1  # padding of a query's relevant-candidate ids


def gold_ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """(Q, N) candidate scores, (Q, P) relevant ids padded with ``NO_GOLD`` -> (Q, P) 1-based ranks, 0 = pad.

    A candidate's rank is its position in the full ranking (the other relevant candidates count too):
    1 + the candidates scored higher + half the others scored the same, its expected position when
    ties are broken at random. Ties matter for lexical scorers: BM25 gives every candidate that shares
    no word with the query the same 0, and counting such ties in the gold's favour would rank a query
    with no overlap at all first.
    """
    valid = gold != NO_GOLD
    gold_scores = scores.gather(1, gold.clamp(min=0)).unsqueeze(2)  # (Q, P, 1)
    higher = (scores.unsqueeze(1) > gold_scores).sum(-1)  # (Q, P, N) -> (Q, P)
    tied = (scores.unsqueeze(1) == gold_scores).sum(-1) - 1  # the gold itself is not a tie
    ranks = 1.0 + higher + tied / 2.0
    return torch.where(valid, ranks, torch.zeros_like(ranks))


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Mean over queries of MRR, recall@1/5/10 and NDCG@10 from (Q, P) ranks (0 = padding, may be fractional).

    recall@k: the share of a query's relevant candidates ranked in the top k. NDCG@10: binary
    relevance, log2 discount, normalised by the ideal ranking of the query's relevant candidates.
    MRR: 1 / rank of the best-ranked relevant candidate (no cut-off).
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    valid = ranks > 0
    n_relevant = valid.sum(1)
    assert (n_relevant > 0).all(), "every evaluated query has a relevant candidate"
    out = {"mrr": float(np.mean(1.0 / np.where(valid, ranks, np.inf).min(1)))}
    for k in RECALL_AT:
        out[f"recall@{k}"] = float(np.mean((valid & (ranks <= k)).sum(1) / n_relevant))
    gains = np.where(valid & (ranks <= NDCG_AT), 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, NDCG_AT + 2)))  # ideal DCG of 1..NDCG_AT relevant items
    out[f"ndcg@{NDCG_AT}"] = float(np.mean(gains.sum(1) / ideal[np.minimum(n_relevant, NDCG_AT) - 1]))
    return out
