"""Row checks for labelled text (every bad row reported at once with file:line) and train label balance."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.data.readers import Problems, Table
from tunelab.errors import DataError

logger = logging.getLogger(__name__)


def require_columns(table: Table, columns: Sequence[str]) -> None:
    """Fail naming the missing column, the columns present and the config key to change."""
    for column in columns:
        if column not in table.columns:
            present = ", ".join(table.columns) or "none"
            raise DataError(
                f"{table.path}: column {column!r} not found (columns: {present}); "
                "fix the file or set data.text_column / data.label_column"
            )


def normalise_label(value: Any) -> str | None:
    """Labels may be strings or integers; both become strings. Empty means missing."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    if isinstance(value, float):
        if value != value:  # NaN from Parquet/pandas means missing
            return None
        return str(int(value)) if value.is_integer() else str(value)
    text = str(value).strip()
    return text or None


def _label_cell(value: Any, separator: str | None) -> tuple[list[str] | str | None, str | None]:
    """(normalised label or label list, problem) of one cell; ``separator`` set means multi-label.

    Multi-label cells are JSON lists or ``separator``-joined strings; a list in a single-label run is
    refused rather than silently stringified.
    """
    if separator is None:
        if isinstance(value, list):
            return None, "label is a list; set task.params.multi_label: true for multi-label data"
        return normalise_label(value), None
    parts = value if isinstance(value, list) else str(value or "").split(separator)
    names = [name for name in (normalise_label(part) for part in parts) if name is not None]
    return list(dict.fromkeys(names)) or None, None


def check_rows(
    table: Table,
    text_columns: Sequence[str],
    label_column: str | None,
    known: Sequence[str] | None,
    problems: Problems,
    separator: str | None = None,
) -> dict[str, list[Any]]:
    """Texts as strings and normalised labels, column by name; bad rows go to ``problems`` in row order.

    A row is bad when a text cell is empty, its label is missing, or (when ``known`` is given) its
    label is not one of ``known``. With ``separator`` (multi-label) each row's label is a list of names,
    every one checked. Label cells are stripped in every file (train, dev, test, eval), so they agree.
    """
    require_columns(table, [*text_columns, *([label_column] if label_column else [])])
    allowed = set(known) if known is not None else None
    out: dict[str, list[Any]] = {
        name: [] for name in (*text_columns, *([label_column] if label_column else []))
    }
    for i in range(len(table.lines)):
        for column in text_columns:
            value = table.columns[column][i]
            text = "" if value is None else str(value)
            if not text.strip():
                problems.add(table.where(i), f"empty text in column {column!r}")
            out[column].append(text)
        if label_column is None:
            continue
        label, problem = _label_cell(table.columns[label_column][i], separator)
        if problem is not None:
            problems.add(table.where(i), problem)
        elif label is None:
            problems.add(table.where(i), f"missing label in column {label_column!r}")
        else:
            for name in [label] if isinstance(label, str) else label:
                if allowed is not None and name not in allowed:
                    problems.add(
                        table.where(i),
                        f"label {name!r} is not in labels [{', '.join(known or [])}]; "
                        "fix the row or add the label to task.params.labels",
                    )
        out[label_column].append(label or ("" if separator is None else []))
    if label_column is not None:
        _note_padded_labels(table, label_column)
    return out


def _note_padded_labels(table: Table, column: str) -> None:
    """Warn once per file how many label cells had surrounding whitespace (``normalise_label`` strips it).

    Stripping keeps ``" pos "`` from becoming a class of its own; the warning says the file is untidy.
    """
    cells = table.columns[column]
    padded = [i for i, cell in enumerate(cells) if isinstance(cell, str) and "" != cell.strip() != cell]
    if padded:
        logger.warning(
            "%s: stripped surrounding whitespace from %d label cells (first %s: %r)",
            table.path,
            len(padded),
            table.where(padded[0]),
            cells[padded[0]],
        )


def sorted_labels(labels: Sequence[str | list[str]]) -> list[str]:
    """Label order when none is configured: numeric if every label is an integer, else alphabetical.

    Multi-label rows (lists) contribute each of their names. Empty strings (missing labels, already
    reported as problems) are not labels.
    """
    names = (name for label in labels for name in ([label] if isinstance(label, str) else label))
    unique = {name for name in names if name}
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


RARE_ROWS = 5  # fewer train rows than this: too few to learn a label from, or to score it on dev
IMBALANCE_RATIO = 3.0  # largest / smallest train label above this: e.g. a binary set under 25% minority
SHOWN_LABELS = 12  # label counts listed in full up to this many labels, else the largest and smallest


@dataclass(frozen=True)
class LabelBalance:
    """Train rows per label (in label order), and whether they are skewed enough to change training.

    Skewed means imbalanced (largest / smallest count above IMBALANCE_RATIO) or holding a label with
    fewer than RARE_ROWS rows: accuracy then rewards a model that never predicts the small labels, the
    failure macro-F1 exposes (it averages the labels' F1 with equal weight).
    """

    counts: dict[str, int]

    @property
    def rare(self) -> list[str]:
        """Labels with fewer than RARE_ROWS train rows (labels missing from train included)."""
        return [name for name, n in self.counts.items() if n < RARE_ROWS]

    @property
    def ratio(self) -> float:
        """Largest over smallest train count; infinite when a label has no train row."""
        smallest = min(self.counts.values())
        return max(self.counts.values()) / smallest if smallest else float("inf")

    @property
    def imbalanced(self) -> bool:
        """The largest label has more than IMBALANCE_RATIO times the rows of the smallest."""
        return self.ratio > IMBALANCE_RATIO

    @property
    def skewed(self) -> bool:
        """Imbalanced, or a label too rare to learn from: what makes accuracy a misleading selector."""
        return self.imbalanced or bool(self.rare)

    def summary(self) -> str:
        """Rows per label, largest first; the middle elided past SHOWN_LABELS labels."""
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])
        cells = [f"{name} {n}" for name, n in ranked]
        if len(cells) > SHOWN_LABELS:
            half = SHOWN_LABELS // 2
            cells = [*cells[:half], f"... {len(cells) - 2 * half} more ...", *cells[-half:]]
        return f"{len(self.counts)} labels, {sum(self.counts.values())} train rows: {', '.join(cells)}"


def label_balance(labels: Sequence[str | list[str]], names: Sequence[str]) -> LabelBalance:
    """Train rows per label of ``names``; a multi-label row counts once for each of its labels."""
    counts = Counter(name for label in labels for name in ([label] if isinstance(label, str) else label))
    return LabelBalance({name: counts.get(name, 0) for name in names})


def report_label_balance(balance: LabelBalance) -> None:
    """Log the train label counts, and warn before training about rare labels and imbalance."""
    logger.info("train labels: %s", balance.summary())
    if balance.rare:
        rare = ", ".join(f"{name} {balance.counts[name]}" for name in balance.rare)
        logger.warning(
            "%d labels have fewer than %d train rows (%s): too few to learn them or to score them on dev; "
            "add rows, or merge each into a related label",
            len(balance.rare),
            RARE_ROWS,
            rare,
        )
    if balance.imbalanced:
        logger.warning(
            "train labels are imbalanced: the largest has %.1fx the rows of the smallest (above %.0fx); "
            "accuracy can stay high while small labels are never predicted, so compare macro_f1",
            balance.ratio,
            IMBALANCE_RATIO,
        )
