"""Data files -> checked splits: every bad row is reported as file:line, all at once."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pytest

from tunelab.config import DataConfig
from tunelab.data import load_labeled_data, load_texts
from tunelab.data.checks import MAX_REPORTED
from tunelab.data.readers import read_table
from tunelab.errors import DataError


def _csv(path: Path, rows: list[list[Any]], header: tuple[str, ...] = ("text", "label")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _rows(n: int, labels: tuple[str, ...] = ("neg", "pos")) -> list[list[str]]:
    return [[f"example number {i}", labels[i % len(labels)]] for i in range(n)]


def _load(train: Path, dev: Path | None = None, labels: list[str] | None = None, seed: int = 0, **kw: Any):
    cfg = DataConfig(train_file=train, dev_file=dev, **kw)
    return load_labeled_data(cfg, labels, seed)


def _at(path: Path, where: str | int) -> str:
    return re.escape(f"{path}:{where}: ")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_load_labeled_data_missing_column_names_column_and_present_columns(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"train{suffix}"
    if suffix == ".csv":
        _csv(path, [["hi", "pos"]], header=("sentence", "label"))
    else:
        _jsonl(path, [{"sentence": "hi", "label": "pos"}])

    with pytest.raises(
        DataError, match=rf"{re.escape(str(path))}: column 'text' not found \(columns: sentence, label\)"
    ):
        _load(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["", "pos"], "empty text in column 'text'"),
        (["   ", "pos"], "empty text in column 'text'"),
        (["fine text", ""], "missing label in column 'label'"),
        (["fine text", "  "], "missing label in column 'label'"),
    ],
)
def test_load_labeled_data_bad_train_row_reported_with_file_line(
    tmp_path: Path, row: list[str], message: str
) -> None:
    train = _csv(tmp_path / "train.csv", [*_rows(3), row, *_rows(2)])

    with pytest.raises(DataError, match=_at(train, 5) + re.escape(message)):
        _load(train, dev=_csv(tmp_path / "dev.csv", _rows(2)))


def test_load_labeled_data_unknown_dev_label_reported_with_file_line(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", _rows(4))
    dev = _csv(tmp_path / "dev.csv", [["a", "pos"], ["b", "neutral"]])

    with pytest.raises(DataError, match=_at(dev, 3) + r"label 'neutral' is not in labels \[neg, pos\]"):
        _load(train, dev=dev)


def test_load_labeled_data_reports_all_bad_rows_of_a_file_at_once(tmp_path: Path) -> None:
    rows = [["ok", "pos"], ["", "pos"], ["ok", "neg"], ["ok", ""], ["", ""]]
    train = _csv(tmp_path / "train.csv", rows)

    with pytest.raises(DataError) as excinfo:
        _load(train, dev=_csv(tmp_path / "dev.csv", _rows(2)))

    lines = str(excinfo.value).splitlines()
    assert lines[0].startswith("3 bad rows")  # rows 3, 5 and 6; row 6 has two problems
    assert lines[1:] == [
        f"{train}:3: empty text in column 'text'",
        f"{train}:5: missing label in column 'label'",
        f"{train}:6: empty text in column 'text'",
        f"{train}:6: missing label in column 'label'",
    ]


def test_load_labeled_data_reports_bad_rows_of_dev_and_test_together(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", _rows(4))
    dev = _csv(tmp_path / "dev.csv", [["a", "pos"], ["b", "other"]])
    test = _csv(tmp_path / "test.csv", [["", "pos"]])

    with pytest.raises(DataError) as excinfo:
        load_labeled_data(DataConfig(train_file=train, dev_file=dev, test_file=test), None, 0)

    message = str(excinfo.value)
    assert f"{dev}:3: label 'other'" in message
    assert f"{test}:2: empty text" in message


def test_load_labeled_data_reports_bad_rows_of_train_and_dev_together(tmp_path: Path) -> None:
    """The docstring promises 'every bad row of every file' in one DataError."""
    train = _csv(tmp_path / "train.csv", [*_rows(4), ["", "pos"]])
    dev = _csv(tmp_path / "dev.csv", [["a", "pos"], ["b", "other"]])

    with pytest.raises(DataError) as excinfo:
        _load(train, dev=dev)

    message = str(excinfo.value)
    assert f"{train}:6: empty text" in message
    assert f"{dev}:3: label 'other'" in message


def test_load_labeled_data_caps_report_and_counts_the_rest(tmp_path: Path) -> None:
    n_bad = MAX_REPORTED + 5
    train = _csv(tmp_path / "train.csv", [["", "pos"]] * n_bad)

    with pytest.raises(DataError, match=rf"^{n_bad} bad rows") as excinfo:
        _load(train)

    lines = str(excinfo.value).splitlines()
    assert len([ln for ln in lines if "empty text" in ln]) == MAX_REPORTED
    assert lines[-1] == "... and 5 more problems"


@pytest.mark.parametrize(
    ("content", "bad_line"),
    [
        ('text,label\n"two\nlines",pos\n"three\n\nlines",neg\n,pos\n', 7),
        ('text,label\nfirst,pos\n"quoted, with comma",neg\n"multi\nline",pos\nlast,\n', 6),
        ("text,label\nfirst,pos\n\n,neg\nlast,pos\n", 4),
    ],
    ids=["multiline-fields", "mixed", "blank-line"],
)
def test_read_table_csv_line_numbers_are_physical_lines(tmp_path: Path, content: str, bad_line: int) -> None:
    path = tmp_path / "train.csv"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(DataError, match=_at(path, bad_line)):
        _load(path, dev=_csv(tmp_path / "dev.csv", _rows(2)))


def test_read_table_csv_keeps_multiline_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"two\nlines",pos\nnext,neg\n', encoding="utf-8")

    table = read_table(path)

    assert table.columns["text"] == ["two\nlines", "next"]
    assert table.lines == [2, 4]


def test_read_table_csv_extra_field_reported_with_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,pos\nb,neg,extra\n", encoding="utf-8")

    with pytest.raises(DataError, match=_at(path, 3) + "3 fields but the header has 2"):
        read_table(path)


def test_read_table_malformed_jsonl_line_reported_with_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "pos"}\n\n{"text": "b", "label": \n', encoding="utf-8")

    with pytest.raises(DataError, match=_at(path, 3) + r"not valid JSON"):
        read_table(path)


def test_read_table_jsonl_non_object_reported_with_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "pos"}\n["b", "neg"]\n', encoding="utf-8")

    with pytest.raises(DataError, match=_at(path, 2) + r"expected a JSON object, got list"):
        read_table(path)


def test_read_table_jsonl_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "pos"}\n\n{"text": "", "label": "neg"}\n', encoding="utf-8")

    with pytest.raises(DataError, match=_at(path, 3) + "empty text"):
        _load(path, dev=_csv(tmp_path / "dev.csv", [["x", "pos"]]))


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.csv", "file not found"), ("data.tsv", "unsupported file type '.tsv'")],
)
def test_read_table_unreadable_file_named(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / name
    if name.endswith(".tsv"):
        path.write_text("text\tlabel\n", encoding="utf-8")

    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        read_table(path)


@pytest.mark.parametrize("suffix", [".parquet", ".PARQUET"])
def test_load_labeled_data_reads_parquet_and_reports_row_numbers(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    datasets.Dataset.from_dict(
        {"text": ["a", "b", "", "d"], "label": ["pos", None, "neg", "neg"]}
    ).to_parquet(str(path))

    with pytest.raises(DataError) as excinfo:
        _load(path)

    lines = str(excinfo.value).splitlines()[1:]
    assert lines == [  # row order, not check order
        f"{path}:row 2: missing label in column 'label'",
        f"{path}:row 3: empty text in column 'text'",
    ]


def test_load_labeled_data_reads_valid_parquet(tmp_path: Path) -> None:
    train = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [1, 0, 1]}).to_parquet(str(train))
    dev = tmp_path / "dev.parquet"
    datasets.Dataset.from_dict({"text": ["x"], "label": [0]}).to_parquet(str(dev))

    data = _load(train, dev=dev)

    assert data.train["text"] == ["a", "b", "c"]
    assert data.train["label"] == ["1", "0", "1"]
    assert data.labels == ["0", "1"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_load_labeled_data_integer_labels_sorted_numerically(tmp_path: Path, suffix: str) -> None:
    values = [10, 2, 0, 1, 2, 10, 0, 1]
    train = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        _jsonl(train, [{"text": f"t{i}", "label": v} for i, v in enumerate(values)])
    else:
        _csv(train, [[f"t{i}", str(v)] for i, v in enumerate(values)])
    dev = _jsonl(tmp_path / "dev.jsonl", [{"text": "d", "label": 2}])

    data = _load(train, dev=dev)

    assert data.labels == ["0", "1", "2", "10"]
    assert data.train["label"] == [str(v) for v in values]
    assert data.dev["label"] == ["2"]


def test_load_labeled_data_configured_labels_reject_unknown_train_label(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", [["a", "pos"], ["b", "neg"], ["c", "meh"]])

    with pytest.raises(DataError, match=_at(train, 4) + r"label 'meh' is not in labels \[pos, neg\]"):
        _load(train, dev=_csv(tmp_path / "dev.csv", _rows(2)), labels=["pos", "neg"])


def test_load_labeled_data_configured_labels_keep_their_order(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", _rows(4))

    data = _load(train, dev=_csv(tmp_path / "dev.csv", _rows(2)), labels=["pos", "neg"])

    assert data.labels == ["pos", "neg"]


def _split_train(tmp_path: Path) -> Path:
    rows = [[f"row {i}", "major" if i % 5 else "minor"] for i in range(200)]  # 160 major, 40 minor
    return _csv(tmp_path / "train.csv", rows)


def test_load_labeled_data_auto_dev_split_is_stratified(tmp_path: Path) -> None:
    data = _load(_split_train(tmp_path), dev_ratio=0.2, seed=3)

    assert Counter(data.dev["label"]) == {"major": 32, "minor": 8}
    assert Counter(data.train["label"]) == {"major": 128, "minor": 32}
    assert not set(data.dev["text"]) & set(data.train["text"])
    assert data.test is None


def test_load_labeled_data_auto_dev_split_is_seeded(tmp_path: Path) -> None:
    train = _split_train(tmp_path)

    first, again, other = (_load(train, dev_ratio=0.2, seed=s) for s in (3, 3, 4))

    assert first.dev["text"] == again.dev["text"]
    assert first.train["text"] == again.train["text"]
    assert set(first.dev["text"]) != set(other.dev["text"])


def test_load_labeled_data_max_train_samples_takes_seeded_subset(tmp_path: Path) -> None:
    rows = _rows(60)
    train = _csv(tmp_path / "train.csv", rows)
    dev = _csv(tmp_path / "dev.csv", _rows(6))

    first, again, other = (_load(train, dev=dev, seed=s, max_train_samples=10) for s in (1, 1, 2))

    assert len(first.train) == 10
    assert set(first.train["text"]) <= {text for text, _ in rows}
    assert first.train["text"] == again.train["text"]
    assert first.train["text"] != other.train["text"]
    assert len(first.dev) == 6


def test_load_labeled_data_max_train_samples_above_size_keeps_all(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", _rows(8))

    data = _load(train, dev=_csv(tmp_path / "dev.csv", _rows(2)), max_train_samples=100)

    assert data.train["text"] == [text for text, _ in _rows(8)]


def test_load_texts_plain_text_file_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "inputs.txt"
    path.write_text("first line\n\n  \nsecond, with comma\r\nthird\n", encoding="utf-8")

    assert load_texts(path, "text") == ["first line", "second, with comma", "third"]


def test_load_texts_reads_csv_column(tmp_path: Path) -> None:
    path = _csv(tmp_path / "inputs.csv", [["id1", "hello"], ["id2", "multi\nline"]], header=("id", "review"))

    assert load_texts(path, "review") == ["hello", "multi\nline"]


def test_load_texts_csv_missing_column_names_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path / "inputs.csv", [["id1", "hello"]], header=("id", "review"))

    with pytest.raises(DataError, match=r"column 'text' not found \(columns: id, review\)"):
        load_texts(path, "text")


def test_load_texts_missing_plain_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"

    with pytest.raises(DataError, match=re.escape(f"{path}: file not found")):
        load_texts(path, "text")
