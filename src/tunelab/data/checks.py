"""Row checks for labelled text: every bad row is collected and reported at once with file:line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunelab.data.readers import Table
from tunelab.errors import DataError

MAX_REPORTED = 20


def require_columns(table: Table, columns: Sequence[str]) -> None:
    """Fail naming the missing column, the columns present and the config key to change."""
    for column in columns:
        if column not in table.columns:
            present = ", ".join(table.columns) or "none"
            raise DataError(
                f"{table.path}: column {column!r} not found (columns: {present}); "
                "fix the file or set data.text_column / data.label_column"
            )


def raise_problems(problems: list[str]) -> None:
    """Raise one DataError listing up to MAX_REPORTED problems and a count of the rest."""
    if not problems:
        return
    shown = problems[:MAX_REPORTED]
    more = len(problems) - len(shown)
    tail = f"\n... and {more} more bad rows" if more else ""
    raise DataError(f"{len(problems)} bad rows; the run did not start:\n" + "\n".join(shown) + tail)


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


def check_texts(table: Table, column: str, problems: list[str]) -> list[str]:
    """Text cells as strings; empty or missing cells are recorded as problems."""
    texts: list[str] = []
    for i, value in enumerate(table.columns[column]):
        text = "" if value is None else str(value)
        if not text.strip():
            problems.append(f"{table.where(i)}: empty text in column {column!r}")
        texts.append(text)
    return texts


def check_labels(table: Table, column: str, known: Sequence[str] | None, problems: list[str]) -> list[str]:
    """Normalised labels; missing labels, and labels outside ``known`` when given, are problems."""
    allowed = set(known) if known is not None else None
    labels: list[str] = []
    for i, value in enumerate(table.columns[column]):
        label = normalise_label(value)
        if label is None:
            problems.append(f"{table.where(i)}: missing label in column {column!r}")
        elif allowed is not None and label not in allowed:
            problems.append(
                f"{table.where(i)}: label {label!r} is not in labels [{', '.join(known or [])}]; "
                "fix the row or add the label to task.params.labels"
            )
        labels.append(label or "")
    return labels


def sorted_labels(labels: Sequence[str]) -> list[str]:
    """Label order when none is configured: numeric if every label is an integer, else alphabetical."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)
