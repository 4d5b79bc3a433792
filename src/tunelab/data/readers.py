"""Read local CSV / JSONL / Parquet files into columns that remember each row's source line.

CSV and JSONL are parsed with the standard library rather than ``datasets``' builders because those
lose the physical line of each record, and every bad row must be reported as ``file:line``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from tunelab.errors import DataError

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Table:
    """Rows of one file plus, per row, where it came from (for error messages)."""

    path: Path
    columns: dict[str, list[Any]]  # raw cell values; checks.py normalises types
    lines: list[int]  # 1-based line where each row starts (CSV/JSONL) or 1-based row number (Parquet)

    def where(self, index: int) -> str:
        """``file:line`` for CSV/JSONL, ``file:row N`` for Parquet."""
        sep = ":row " if self.path.suffix.lower() == ".parquet" else ":"
        return f"{self.path}{sep}{self.lines[index]}"


def _read_csv(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows and the physical line each starts on (blank lines skipped, quoted newlines counted)."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: Excel exports start with a BOM
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file; expected a header row")
            for record in reader:
                if not record:
                    continue
                start = reader.line_num - sum(cell.count("\n") for cell in record)
                if len(record) > len(header):
                    raise DataError(f"{path}:{start}: {len(record)} fields but the header has {len(header)}")
                rows.append(dict(zip(header, record, strict=False)))  # short rows: missing cells
                lines.append(start)
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    return rows, lines


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not valid JSON ({exc.msg}); one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            rows.append(record)
            lines.append(number)
    return rows, lines


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def read_table(path: Path) -> Table:
    """Load one data file; the format comes from the suffix (.csv, .jsonl/.json, .parquet)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (shipped datasets: `tunelab data prepare NAME DIR`)")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if kind == "parquet":
        data = datasets.Dataset.from_parquet(str(path), keep_in_memory=True).to_dict()
        n_rows = len(next(iter(data.values()), []))
        return Table(path, data, list(range(1, n_rows + 1)))
    rows, lines = _read_csv(path) if kind == "csv" else _read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return Table(path, {name: [row.get(name) for row in rows] for name in _columns(rows)}, lines)


def read_lines(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """A plain-text corpus, one document per line: (texts, problems as (``file:line``, message)).

    Empty lines and bytes that are not UTF-8 are problems rather than skipped silently: both usually
    mean the wrong file or a broken export.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found (shipped datasets: `tunelab data prepare NAME DIR`)")
    texts: list[str] = []
    problems: list[tuple[str, str]] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                problems.append((f"{path}:{number}", f"not UTF-8 ({exc.reason} at byte {exc.start})"))
                continue
            if not line.strip():
                problems.append((f"{path}:{number}", "empty line; one document per line, no blank lines"))
                continue
            texts.append(line.lstrip("\ufeff") if number == 1 else line)
    if not texts and not problems:
        problems.append((str(path), "no lines"))
    return texts, problems
