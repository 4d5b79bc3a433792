"""Ranking baselines beside a tuned ``retrieval`` run: same split, same candidates, same metrics.

Each baseline is one function ``(plan, data, split) -> metrics`` returning the dict the task's own
evaluation returns (``tasks.retrieval.ranking``: MRR, recall@1/5/10, NDCG@10), so a recipe prints
them in one table and a new baseline joins by one entry in ``BASELINES``:

- ``bm25``: Okapi BM25 (``bm25s``) over the candidate texts; words lower-cased, CJK text one token per
  character (Chinese has no spaces; character unigrams are the usual BM25 baseline there).
- ``untuned``: the run's own model before any training step (the pretrained encoder's embeddings).
- ``tuned`` (``compare``): a saved run's best model, scored on the split it did not train on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.data import TaskData
from tunelab.errors import ConfigError, TunelabError
from tunelab.evaluation import evaluate
from tunelab.inference.artifact import load_artifact
from tunelab.tasks.retrieval.ranking import NO_GOLD, gold_ranks, ranking_metrics
from tunelab.tasks.spec import tokenize_dataset
from tunelab.training import prepare_inputs
from tunelab.training.plan import Plan

logger = logging.getLogger(__name__)

Baseline = Callable[[Plan, TaskData, str], dict[str, float]]
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+")  # one CJK character, or a run of letters/digits


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words, with every CJK character a token of its own."""
    return _TOKEN.findall(text.casefold())


def split_of(data: TaskData, split: str) -> Any:
    """The evaluation split ``dev`` or ``test`` (one row per query with its ``positives``)."""
    rows = {"dev": data.dev, "test": data.test}.get(split)
    if rows is None:
        raise ConfigError(
            f"--split: {split!r} is not a split of this config; use dev, or test with data.test_file"
        )
    return rows


def gold_matrix(rows: Any, labels: list[str]) -> torch.Tensor:
    """(Q, P) candidate ids of each query's positives, padded with ``NO_GOLD``."""
    index = {text: i for i, text in enumerate(labels)}
    ids = [[index[p] for p in positives] for positives in rows["positives"]]
    width = max(map(len, ids))
    return torch.tensor([row + [NO_GOLD] * (width - len(row)) for row in ids])


def bm25(plan: Plan, data: TaskData, split: str) -> dict[str, float]:
    """BM25 scores of every candidate for every query of ``split``, ranked like the task's eval."""
    import bm25s

    rows = split_of(data, split)
    index = bm25s.BM25()
    index.index([bm25_tokens(text) for text in data.labels], show_progress=False)
    scores = np.stack([index.get_scores(bm25_tokens(query)) for query in rows["text"]])  # (Q, N)
    ranks = gold_ranks(torch.from_numpy(scores), gold_matrix(rows, data.labels))
    return ranking_metrics(ranks.numpy())


def untuned(plan: Plan, data: TaskData, split: str) -> dict[str, float]:
    """The run's model as built before training (pretrained encoder, methods applied at their init)."""
    inputs = prepare_inputs(plan, data)
    features = inputs.test if split == "test" else inputs.dev
    rows = split_of(data, split)
    return _scores(
        plan, inputs.adapted.model, features, inputs.collator, rows, inputs.labels, inputs.task_params
    )


def tuned(run: Path, plan: Plan, data: TaskData, split: str) -> dict[str, float]:
    """A saved run's model (a run dir or its ``best/``) on ``split``; it must hold the same candidates."""
    art = load_artifact(run)
    if art.labels != data.labels:
        raise TunelabError(
            f"{art.path}: its {len(art.labels)} candidates differ from the config's {len(data.labels)}; "
            "compare a run trained from this config"
        )
    rows = split_of(data, split)
    features = tokenize_dataset(art.task, art.task_params, art.tokenizer, rows, art.labels)
    collator = art.task.collator(art.tokenizer, art.task_params)
    return _scores(plan, art.model, features, collator, rows, art.labels, art.task_params)


def _scores(
    plan: Plan, model: Any, features: Any, collator: Any, rows: Any, labels: list[str], params: Any
) -> dict[str, float]:
    """The task's headline metrics of ``model`` on tokenised ``features`` (``rows``: their queries)."""
    batch = plan.cfg.train.eval_batch_size
    metrics = evaluate(model, plan.task, features, collator, labels, batch, params=params, examples=rows)
    return {name: metrics[name] for name in plan.task.metric_names}


BASELINES: dict[str, Baseline] = {"bm25": bm25, "untuned": untuned}


def compare(
    plan: Plan, data: TaskData, split: str, run: Path | None = None, names: Mapping[str, Baseline] = BASELINES
) -> dict[str, dict[str, float]]:
    """Every baseline (and the run at ``run``, as ``tuned``) on ``split``, each with its wall seconds."""
    out: dict[str, dict[str, float]] = {}
    jobs: dict[str, Callable[[], dict[str, float]]] = {
        name: partial(fn, plan, data, split) for name, fn in names.items()
    }
    if run is not None:
        jobs["tuned"] = partial(tuned, run, plan, data, split)
    for name, job in jobs.items():
        start = time.perf_counter()
        out[name] = {**job(), "seconds": round(time.perf_counter() - start, 2)}
        logger.info("%s on %s: %s", name, split, out[name])
    return out
