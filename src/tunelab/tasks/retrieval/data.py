"""Retrieval data: (query, positive) rows -> training pairs, evaluation queries and the candidate set.

Files are CSV / JSONL (or Parquet) with text columns ``query`` and ``positive``: one relevant item per
row, several rows may share a query (several relevant items). The candidate set every query is ranked
against is every distinct ``positive`` of train + dev + test (whole files, before any subsampling) plus
the texts of ``task.params.corpus_file``, in order of first appearance in the files. Ranking against all of
them, not against one split's own positives, is the harder and honest setting: a test query must find
its answer among every answer the system knows, as it would when served. The candidates are the run's
labels (label id = candidate index), so the run record and the saved model carry them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from tunelab.config import DataConfig
from tunelab.data import TaskData
from tunelab.data.checks import check_rows
from tunelab.data.readers import Problems, read_table
from tunelab.data.splits import holdout_split, subsample

logger = logging.getLogger(__name__)

QUERY, POSITIVE, CORPUS_TEXT = "query", "positive", "text"  # file columns (the data contract)
Pairs = list[tuple[str, str]]


def read_pairs(path: Path, problems: Problems) -> Pairs:
    """Distinct (query, positive) rows of one file, in file order; empty cells go to ``problems``."""
    cols = check_rows(read_table(path, problems), [QUERY, POSITIVE], None, None, problems)
    return list(dict.fromkeys(zip(cols[QUERY], cols[POSITIVE], strict=True)))


def read_corpus(path: Path, problems: Problems) -> list[str]:
    """The ``text`` column of an extra-candidates file."""
    return check_rows(read_table(path, problems), [CORPUS_TEXT], None, None, problems)[CORPUS_TEXT]


def candidate_texts(splits: list[Pairs], corpus: list[str]) -> list[str]:
    """Distinct positives of every split, then the corpus texts, in order of first appearance."""
    return list(dict.fromkeys([p for pairs in splits for _, p in pairs] + corpus))


def split_by_query(pairs: Pairs, ratio: float, seed: int) -> tuple[Pairs, Pairs]:
    """(train, dev) rows with ``ratio`` of the distinct queries in dev; a query is never on both sides."""
    queries = list(dict.fromkeys(q for q, _ in pairs))
    _, dev_queries = holdout_split(queries, None, ratio, seed)
    held = set(dev_queries)
    return [r for r in pairs if r[0] not in held], [r for r in pairs if r[0] in held]


def train_dataset(pairs: Pairs, limit: int | None, seed: int) -> datasets.Dataset:
    """One example per pair: ``text`` (the query), ``positive`` and ``query_id`` (same query, same id).

    ``query_id`` lets the in-batch loss tell a second positive of the same query from a negative.
    """
    ids: dict[str, int] = {}
    rows = [pairs[i] for i in subsample(len(pairs), limit, seed)]
    return datasets.Dataset.from_dict(
        {
            "text": [q for q, _ in rows],
            "positive": [p for _, p in rows],
            "query_id": [ids.setdefault(q, len(ids)) for q, _ in rows],
        }
    )


def eval_dataset(pairs: Pairs, limit: int | None = None, seed: int = 0) -> datasets.Dataset:
    """One example per distinct query: ``text`` and ``positives`` (all its relevant items)."""
    grouped: dict[str, list[str]] = {}
    for query, positive in pairs:
        grouped.setdefault(query, []).append(positive)
    queries = list(grouped)
    keep = [queries[i] for i in subsample(len(queries), limit, seed)]
    return datasets.Dataset.from_dict({"text": keep, "positives": [grouped[q] for q in keep]})


def warn_shared_queries(train: Pairs, others: dict[str, Pairs]) -> None:
    """Log queries that are in train and in an evaluation split (its scores then flatter the model)."""
    seen = {q for q, _ in train}
    for name, pairs in others.items():
        shared = {q for q, _ in pairs} & seen
        if shared:
            logger.warning(
                "%d %s queries are also train queries; split data by query for an honest score",
                len(shared),
                name,
            )


def load_data(cfg: DataConfig, params: Any, seed: int) -> TaskData:
    """Train pairs, dev/test queries with their positives, and the candidate set as the labels.

    Without ``dev_file``, dev is ``data.dev_ratio`` of train's distinct queries, seeded. Every bad row of
    every file is reported at once (file:line).
    """
    problems = Problems()
    train = read_pairs(cfg.train_file, problems)
    dev = read_pairs(cfg.dev_file, problems) if cfg.dev_file else None
    test = read_pairs(cfg.test_file, problems) if cfg.test_file else None
    corpus = read_corpus(params.corpus_file, problems) if params.corpus_file else []
    problems.raise_if_any()
    candidates = candidate_texts([train, *([dev] if dev else []), *([test] if test else [])], corpus)
    if dev is None:
        train, dev = split_by_query(train, cfg.dev_ratio, seed)
    warn_shared_queries(train, {"dev": dev, **({"test": test} if test else {})})
    return TaskData(
        train=train_dataset(train, cfg.max_train_samples, seed),
        dev=eval_dataset(dev, cfg.max_eval_samples, seed),
        test=eval_dataset(test, cfg.max_eval_samples, seed) if test else None,
        labels=candidates,
    )


def read_eval(path: Path, columns: Any, params: Any, labels: Sequence[str]) -> datasets.Dataset:
    """One (query, positive) file scored against the model's own candidates (``tunelab eval``).

    A positive the model does not hold cannot be ranked: every such row is an error with file:line.
    """
    problems = Problems()
    table = read_table(path, problems)
    cols = check_rows(table, [QUERY, POSITIVE], None, None, problems)
    known = set(labels)
    for i, positive in enumerate(cols[POSITIVE]):
        if positive.strip() and positive not in known:
            problems.add(
                table.where(i),
                "positive is not among the model's candidates; train with this file as dev/test "
                "or with it in task.params.corpus_file",
            )
    problems.raise_if_any()
    return eval_dataset(list(dict.fromkeys(zip(cols[QUERY], cols[POSITIVE], strict=True))))
