"""Read local CSV / JSONL / Parquet files into columns that remember each row's source line.

CSV and JSONL are parsed with the standard library rather than ``datasets``' builders because those
lose the physical line of each record, and every bad row must be reported as ``file:line``. Every text
file is decoded through ``text_lines``, so a byte that is not UTF-8 is a ``file:line`` problem too.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from tunelab.errors import DataError
from tunelab.io import open_text, utf8_error

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
MAX_REPORTED = 20
_LINE = re.compile(r"(?P<file>.*?):(?:row )?(?P<line>\d+)(?: token \d+)?")  # file:line, file:row N


@dataclass
class Problems:
    """Bad rows across files, reported in file order (as first seen) then line order.

    Readers and checks add problems as they meet them, so one file's undecodable lines come before its
    empty cells; sorting at the end puts the report in the order a user fixes the file.
    """

    entries: list[tuple[str, str]] = field(default_factory=list)  # (where, message)
    rows: set[str] = field(default_factory=set)

    def add(self, where: str, message: str) -> None:
        """Record ``message`` about the row at ``where`` (``file:line`` or a JSON path)."""
        self.entries.append((where, message))
        self.rows.add(where)

    @property
    def messages(self) -> list[str]:
        """``where: message`` per problem, by file (in the order files were first seen) then line."""
        files: dict[str, int] = {}
        keys = []
        for where, _ in self.entries:
            match = _LINE.fullmatch(where)
            file, line = (match["file"], int(match["line"])) if match else (where, 0)
            keys.append((files.setdefault(file, len(files)), line))
        order = sorted(range(len(self.entries)), key=keys.__getitem__)  # stable: one row keeps its order
        return [": ".join(self.entries[i]) for i in order]

    def raise_if_any(self) -> None:
        """Raise one DataError listing up to MAX_REPORTED messages and a count of the rest."""
        if not self.entries:
            return
        shown = self.messages[:MAX_REPORTED]
        more = len(self.entries) - len(shown)
        tail = f"\n... and {more} more problems" if more else ""
        raise DataError(f"{len(self.rows)} bad rows:\n" + "\n".join(shown) + tail)


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


def _decoded_lines(path: Path, problems: Problems, bad: set[int]) -> Iterator[tuple[int, str]]:
    """Every line of ``path``, one not UTF-8 reported, added to ``bad`` and yielded with U+FFFD.

    For parsers that must see every line to keep their place (a quoted CSV field may span lines).
    """
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            error = utf8_error(line)
            if error is not None:
                problems.add(f"{path}:{number}", error[1])
                bad.add(number)
                line = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            yield number, line


def text_lines(path: Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """(1-based line number, line with its ending) of a UTF-8 text file; a leading BOM is dropped.

    The one way tunelab reads text data: a line that is not UTF-8 goes to ``problems`` as
    ``file:line: not UTF-8 (byte 0x..)`` and is skipped, instead of a traceback without a place.
    """
    bad: set[int] = set()
    for number, line in _decoded_lines(path, problems, bad):
        if number not in bad:
            yield number, line


def _header(path: Path, header: list[str]) -> None:
    """Refuse a header naming one column twice: every row would silently keep only the later cell."""
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(
                f"{path}:1: column {name!r} appears twice in the header (columns {seen[name]} and "
                f"{position}); rename or remove one"
            )
        seen[name] = position


def _read_csv(path: Path, problems: Problems) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows and the physical line each starts on (blank lines skipped, quoted newlines counted).

    A row repeating the header (files joined with ``cat``) or holding more fields than the header, or
    a line that is not UTF-8, goes to ``problems`` and is left out.
    """
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    bad: set[int] = set()
    reader = csv.reader(line for _, line in _decoded_lines(path, problems, bad))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file; expected a header row")
        if 1 in bad:  # column names with U+FFFD would only fail later as a confusing missing column
            problems.raise_if_any()
        _header(path, header)
        for record in reader:
            if not record:
                continue
            start = reader.line_num - sum(cell.count("\n") for cell in record)
            if bad.intersection(range(start, reader.line_num + 1)):
                continue
            if [record[0].removeprefix("\ufeff"), *record[1:]] == header:  # a joined file's BOM too
                problems.add(f"{path}:{start}", "repeats the header row (files joined together?); delete it")
            elif len(record) > len(header):
                problems.add(f"{path}:{start}", f"{len(record)} fields but the header has {len(header)}")
            else:
                rows.append(dict(zip(header, record, strict=False)))  # short rows: missing cells
                lines.append(start)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    return rows, lines


class _DuplicateKeyError(ValueError):
    """A JSON object names one key twice (``json`` would silently keep the last)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _read_jsonl(path: Path, problems: Problems) -> tuple[list[dict[str, Any]], list[int]]:
    """One JSON object per line; a line that is not one (or not UTF-8) goes to ``problems``."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    for number, line in text_lines(path, problems):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            problems.add(f"{path}:{number}", f"not valid JSON ({exc.msg}); one JSON object per line")
            continue
        except _DuplicateKeyError as exc:
            problems.add(f"{path}:{number}", f"key {exc.args[0]!r} appears twice in the object; keep one")
            continue
        if not isinstance(record, dict):
            problems.add(f"{path}:{number}", f"expected a JSON object, got {type(record).__name__}")
            continue
        rows.append(record)
        lines.append(number)
    return rows, lines


def _read_parquet(path: Path) -> dict[str, list[Any]]:
    """Columns of a Parquet file; a damaged one is a DataError naming it, not a pyarrow traceback."""
    try:
        dataset = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    columns: dict[str, list[Any]] = dataset.to_dict()
    return columns


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def read_table(path: Path, problems: Problems | None = None) -> Table:
    """Load one data file; the format comes from the suffix (.csv, .jsonl/.json, .parquet).

    Bad rows (not UTF-8, not JSON, a repeated header, too many fields) are left out and added to
    ``problems``, so a caller reading several files reports them all at once; without ``problems``
    they are raised here, together. A file that cannot be read at all raises at once.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found (shipped datasets: `tunelab data prepare NAME DIR`)")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if kind == "parquet":
        data = _read_parquet(path)
        n_rows = len(next(iter(data.values()), []))
        return Table(path, data, list(range(1, n_rows + 1)))
    found = Problems() if problems is None else problems
    rows, lines = _read_csv(path, found) if kind == "csv" else _read_jsonl(path, found)
    if problems is None or not rows:
        found.raise_if_any()
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
    found = Problems()
    for number, line in text_lines(path, found):
        line = line.rstrip("\r\n")
        if not line.strip():
            found.add(f"{path}:{number}", "empty line; one document per line, no blank lines")
            continue
        texts.append(line)
    if not texts and not found.entries:
        found.add(str(path), "no lines")
    return texts, found.entries
