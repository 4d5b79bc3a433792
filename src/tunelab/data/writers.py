"""Plain file writers for prepared datasets, in the formats tunelab's own readers take back.

Each call writes one whole file as UTF-8 and nothing else: callers choose the place (the shipped
dataset converters write into an ``io.atomic_dir``), so a crash never leaves a half-written dataset.
The output is fully determined by the rows, which keeps prepared datasets byte-identical across runs.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R")


def write_csv(path: Path, rows: Iterable[Sequence[str]], header: Sequence[str] = ("text", "label")) -> None:
    r"""A header row, then one row per item, in the csv module's default (Excel) dialect.

    That dialect quotes cells holding commas, quotes or newlines and ends rows with ``\r\n``, which
    both ``data.readers.read_table`` and spreadsheet tools read back unchanged.
    """
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    r"""One JSON object per line, non-ASCII text kept as is (readable Chinese, not ``\u`` escapes)."""
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def write_lines(path: Path, texts: Iterable[str]) -> None:
    r"""One text per line, each ending in ``\n``; texts must not hold newlines themselves."""
    path.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")


def write_conll(path: Path, sentences: Iterable[Sequence[tuple[str, str]]]) -> None:
    """``token<TAB>tag`` lines, sentences separated by one blank line (what ``read_conll`` expects)."""
    lines = [line for sentence in sentences for line in (*(f"{t}\t{g}" for t, g in sentence), "")]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_splits(
    out: Path, splits: Mapping[str, Sequence[R]], write: Callable[[Path, Sequence[R]], None]
) -> dict[str, int]:
    """Write each split to ``out / name`` with ``write``; returns the rows per file, in the same order.

    The returned counts are what ``tunelab data prepare`` prints, so one helper keeps them in step
    with what was actually written.
    """
    for name, rows in splits.items():
        write(out / name, rows)
    return {name: len(rows) for name, rows in splits.items()}
