"""Recommendation recipe (``examples/apps/recommend/``): the popularity baseline beside the two-tower.

The two-tower itself is the ``retrieval`` task trained on ``bbc-recsim`` (a reader's history is the
query, each next click a positive). What the library lacks is the baseline every recommender is
measured against: rank the candidates by how often the training readers clicked them, the same list
for every reader. It is scored on the run config's own data, candidates, eval queries and metric code
(``tasks.retrieval.ranking``), so its figures sit beside the model's line for line.

History items are excluded from neither ranking: in ``bbc-recsim`` no history item is a candidate (a
history holds archive items, the candidates are new items), so there is nothing to exclude.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from tunelab.config import RunConfig
from tunelab.data import TaskData
from tunelab.errors import ConfigError
from tunelab.tasks.retrieval.ranking import NO_GOLD, gold_ranks, ranking_metrics


def popularity_scores(clicks: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
    """(N,) score per candidate: its number of ``clicks``, ties broken by candidate order.

    ``gold_ranks`` counts a tie in the relevant item's favour, which would put every never-clicked
    candidate at rank 1 for a reader whose next item nobody clicked; a fraction below one that falls
    with the candidate's index makes the ranking strict without changing the order of the counts.
    """
    counts = Counter(clicks)
    n = len(candidates)
    return torch.tensor([counts[c] + (n - i) / (n + 1) for i, c in enumerate(candidates)], dtype=torch.float64)


def popularity_metrics(data: TaskData) -> dict[str, float | int]:
    """The retrieval task's metrics of the popularity ranking on the test split (dev when there is none).

    The clicks are the train split's positives as the run trains on them (after
    ``data.max_train_samples``); the candidates and the eval queries are the run's own.
    """
    split = data.test if data.test is not None else data.dev
    if "positive" not in data.train.column_names or "positives" not in split.column_names:
        raise ConfigError("task: the popularity baseline needs a retrieval config (query/positive data)")
    index = {text: i for i, text in enumerate(data.labels)}
    golds = [[index[p] for p in positives] for positives in split["positives"]]
    width = max(len(g) for g in golds)
    gold = torch.tensor([g + [NO_GOLD] * (width - len(g)) for g in golds])  # (Q, P)
    scores = popularity_scores(data.train["positive"], data.labels).expand(len(golds), -1)  # (Q, N)
    return {**ranking_metrics(np.asarray(gold_ranks(scores, gold))), "n_candidates": len(data.labels)}


def popularity_baseline(cfg: RunConfig) -> dict[str, float | int]:
    """Load the config's data as its task would (no weights) and score the popularity ranking on it."""
    from tunelab.training.plan import resolve

    plan = resolve(cfg, count_labels=False)
    return popularity_metrics(plan.task.load_data(cfg.data, plan.task_params, cfg.train.seed))
