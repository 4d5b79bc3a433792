"""The one way data enters tunelab: files -> checked, normalised ``datasets.Dataset`` splits.

Each task reads its own input kind through these readers (``TaskSpec.load_data``); this module holds
the table reader of text classification and the raw-record reader of ``tunelab predict``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from tunelab.config import DataConfig
from tunelab.data.checks import check_rows, sorted_labels
from tunelab.data.readers import Problems, Table, read_lines, read_table, text_lines
from tunelab.data.splits import k_shot, stratified_split, subsample
from tunelab.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskData:
    """A task's raw example splits plus the label order (empty for label-free tasks such as QA, LM).

    Classification rows have ``text`` (+ ``text_pair``) and ``label`` (a string, or a list of strings
    for multi-label data); other tasks define their own columns.
    """

    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset | None
    labels: list[str]


@dataclass(frozen=True)
class Columns:
    """Names of the table columns that hold the input text, the label and the optional second text.

    From ``data.text_column``, ``data.label_column`` and ``data.text_pair_column``; ``label`` is None
    for unlabelled input (texts to predict).
    """

    text: str
    label: str | None = None
    text_pair: str | None = None


def columns_of(cfg: DataConfig) -> Columns:
    """The input columns a data config names (what a run records and ``tunelab eval`` defaults to)."""
    return Columns(text=cfg.text_column, label=cfg.label_column, text_pair=cfg.text_pair_column)


def _extract(
    table: Table, cols: Columns, known: list[str] | None, problems: Problems, separator: str | None = None
) -> dict[str, list[Any]]:
    """Checked columns renamed to tunelab's canonical names: text, text_pair, label."""
    texts = [c for c in (cols.text, cols.text_pair) if c is not None]
    raw = check_rows(table, texts, cols.label, known, problems, separator)
    out = {"text": raw[cols.text]}
    if cols.text_pair is not None:
        out["text_pair"] = raw[cols.text_pair]
    if cols.label is not None:
        out["label"] = raw[cols.label]
    return out


def _dataset(columns: dict[str, list[Any]], indices: list[int] | None = None) -> datasets.Dataset:
    if indices is not None:
        columns = {name: [values[i] for i in indices] for name, values in columns.items()}
    return datasets.Dataset.from_dict(columns)


def _strata(labels: list[Any]) -> list[str]:
    """Stratification keys: the label, or a multi-label row's sorted label set."""
    return [label if isinstance(label, str) else "|".join(sorted(label)) for label in labels]


def load_labeled_data(
    cfg: DataConfig, labels: list[str] | None, seed: int, separator: str | None = None
) -> TaskData:
    """Read train/dev/test, check every row, split dev off train when needed, subsample if asked.

    Raises one DataError listing every bad row of every file, so a run never starts on partial data.
    Labels come from ``labels`` when given, else from the training file. ``separator`` set means
    multi-label rows (see ``checks.check_rows``).
    """
    cols = columns_of(cfg)
    problems = Problems()

    def read(path: Path, known: list[str] | None) -> dict[str, list[Any]]:
        return _extract(read_table(path, problems), cols, known, problems, separator)

    train = read(cfg.train_file, labels)
    names = list(labels) if labels is not None else sorted_labels(train["label"])
    dev = read(cfg.dev_file, names) if cfg.dev_file else None
    test = read(cfg.test_file, names) if cfg.test_file else None
    problems.raise_if_any()

    if dev is None:
        train_idx, dev_idx = stratified_split(_strata(train["label"]), cfg.dev_ratio, seed)
        dev = {name: [values[i] for i in dev_idx] for name, values in train.items()}
        train = {name: [values[i] for i in train_idx] for name, values in train.items()}
    n_train, n_dev = len(train["text"]), len(dev["text"])
    keep = subsample(n_train, cfg.max_train_samples, seed)
    if cfg.k_shot is not None:
        keep = few_shot_rows(_strata(train["label"]), cfg.k_shot, seed)
    return TaskData(
        train=_dataset(train, keep),
        dev=_dataset(dev, subsample(n_dev, cfg.max_eval_samples, seed)),
        test=_dataset(test, subsample(len(test["text"]), cfg.max_eval_samples, seed)) if test else None,
        labels=names,
    )


def few_shot_rows(labels: list[str], k: int, seed: int) -> list[int]:
    """``data.k_shot``: k train rows per label (``splits.k_shot``), logged so a run says what it saw."""
    rows = k_shot(labels, k, seed)
    counts = Counter(labels[i] for i in rows)
    logger.info(
        "k_shot=%d (seed %d): %d train rows %s, row indices %s",
        k,
        seed,
        len(rows),
        dict(sorted(counts.items())),
        rows,
    )
    return rows


def load_labeled_file(
    path: Path, columns: Columns, labels: list[str], separator: str | None = None
) -> datasets.Dataset:
    """One checked file for evaluation; a label outside ``labels`` is an error with file:line."""
    problems = Problems()
    data = _extract(read_table(path, problems), columns, labels, problems, separator)
    problems.raise_if_any()
    return _dataset(data)


def load_texts(path: Path, column: str) -> list[str]:
    """Texts to predict: a column of a CSV/JSONL/Parquet file, or the lines of any other text file."""
    problems = Problems()
    if path.suffix.lower() not in (".csv", ".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        texts = [line.rstrip("\r\n") for _, line in text_lines(path, problems) if line.strip()]
        problems.raise_if_any()
        return texts
    data = _extract(read_table(path, problems), Columns(text=column, label=None), None, problems)
    problems.raise_if_any()
    return data["text"]


def load_records(path: Path, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """Raw prediction records, ``field -> column``; a one-field task also reads plain text lines."""
    if len(fields) == 1:
        ((name, column),) = fields.items()
        return [{name: text} for text in load_texts(path, column)]
    problems = Problems()
    table = read_table(path, problems)
    raw = check_rows(table, list(fields.values()), None, None, problems)
    problems.raise_if_any()
    return [{name: raw[column][i] for name, column in fields.items()} for i in range(len(table.lines))]


def load_inputs(path: Path, columns: Columns) -> dict[str, list[str]]:
    """The input columns of a file in a run's data format (``text``, + ``text_pair``), labels ignored.

    For unlabelled training rows (self-training): the columns are checked as the training file's are,
    every bad row reported with file:line; a one-column run also reads the lines of a plain text file.
    """
    fields = {"text": columns.text}
    if columns.text_pair is not None:
        fields["text_pair"] = columns.text_pair
    records = load_records(path, fields)
    return {name: [record[name] for record in records] for name in fields}


def _read_texts(path: Path, column: str, problems: Problems) -> list[str]:
    """A corpus file: lines of a .txt (or any non-table file), else the text column of a table."""
    if path.suffix.lower() in (".csv", ".jsonl", ".json", ".parquet"):
        return _extract(read_table(path, problems), Columns(text=column, label=None), None, problems)["text"]
    texts, bad = read_lines(path)
    for where, message in bad:
        problems.add(where, message)
    return texts


def load_text_data(cfg: DataConfig, seed: int) -> TaskData:
    """Unlabelled text splits (``labels`` empty): .txt files, one document per line, or a text column.

    Every bad line of every file is reported at once; dev is a seeded split of train when no dev_file.
    """
    problems = Problems()
    train = _read_texts(cfg.train_file, cfg.text_column, problems)
    dev = _read_texts(cfg.dev_file, cfg.text_column, problems) if cfg.dev_file else None
    test = _read_texts(cfg.test_file, cfg.text_column, problems) if cfg.test_file else None
    problems.raise_if_any()
    if dev is None:
        train_idx, dev_idx = stratified_split(["text"] * len(train), cfg.dev_ratio, seed)
        train, dev = [train[i] for i in train_idx], [train[i] for i in dev_idx]

    def dataset(texts: list[str], limit: int | None) -> datasets.Dataset:
        return _dataset({"text": texts}, subsample(len(texts), limit, seed))

    return TaskData(
        train=dataset(train, cfg.max_train_samples),
        dev=dataset(dev, cfg.max_eval_samples),
        test=dataset(test, cfg.max_eval_samples) if test is not None else None,
        labels=[],
    )


def load_text_file(path: Path, column: str) -> datasets.Dataset:
    """One unlabelled file for evaluating a text-only task (lines of a .txt, or a table's text column)."""
    problems = Problems()
    texts = _read_texts(path, column, problems)
    problems.raise_if_any()
    return _dataset({"text": texts})
