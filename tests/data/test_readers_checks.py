"""Data files -> checked splits: every bad row is reported as file:line, all at once."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pytest

from tunelab.config import DataConfig
from tunelab.data import load_labeled_data, load_texts
from tunelab.data.readers import MAX_REPORTED, read_lines, read_table
from tunelab.data.squad import read_qa
from tunelab.data.tagging import read_tagged_file
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


# Bytes that are not UTF-8: every reader names file:line, byte and column (issue 16).
NOT_UTF8 = [
    ("train.csv", b"text,label\nok one,pos\nbad \xff here,neg\n", "3: not UTF-8 (byte 0xff at column 5)"),
    (
        "train.jsonl",
        b'{"text": "a"}\n{"text": "b\xff", "label": "neg"}\n',
        "2: not UTF-8 (byte 0xff at column 12)",
    ),
    ("inputs.txt", b"one\ntwo\nbad \xe9t\xe9\n", "3: not UTF-8 (byte 0xe9 at column 5)"),
    ("squad.json", b'{"data": [\n  {"title": "\xfe"}]}\n', "2: not UTF-8 (byte 0xfe at column 14)"),
    ("train.conll", b"EU\tB-ORG\n\nrejects\tO\nGer\xe4t\tO\n", "4: not UTF-8 (byte 0xe4 at column 4)"),
]


@pytest.mark.parametrize(("name", "content", "message"), NOT_UTF8, ids=[name for name, *_ in NOT_UTF8])
def test_every_reader_reports_a_byte_that_is_not_utf8_with_file_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    read = {
        ".csv": lambda: read_table(path),
        ".jsonl": lambda: read_table(path),
        ".txt": lambda: load_texts(path, "text"),  # what `tunelab predict --file inputs.txt` reads
        ".json": lambda: read_qa(path),
        ".conll": lambda: read_tagged_file(path, "BIO", None),
    }[path.suffix]

    with pytest.raises(DataError, match=re.escape(f"{path}:{message}; save it as UTF-8")):
        read()


def test_read_lines_reports_not_utf8_like_the_table_readers(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"good\n\xc3\x28 broken\n")

    texts, problems = read_lines(path)

    assert texts == ["good"]
    assert problems == [(f"{path}:2", "not UTF-8 (byte 0xc3 at column 1); save it as UTF-8")]


def test_csv_not_utf8_inside_a_quoted_field_keeps_later_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b'text,label\n"two\nlines \xff",pos\nfine,neg\n,pos\n')

    with pytest.raises(DataError) as excinfo:
        _load(path, dev=_csv(tmp_path / "dev.csv", _rows(2)))

    assert str(excinfo.value).splitlines()[1:] == [
        f"{path}:3: not UTF-8 (byte 0xff at column 7); save it as UTF-8",
        f"{path}:5: empty text in column 'text'",
    ]


def test_problems_of_readers_and_checks_are_reported_in_file_then_line_order(tmp_path: Path) -> None:
    """Reading finds lines 4 and 3 before the row checks find line 2; the report is still in line order."""
    train = tmp_path / "train.csv"
    train.write_bytes(b"text,label\n,pos\ntext,label\nbad \xff,neg\nok,neg\nfine,pos\n")
    dev = _csv(tmp_path / "dev.csv", [["a", "pos"], ["b", "other"]])

    with pytest.raises(DataError) as excinfo:
        _load(train, dev=dev)

    assert [line.split(": ")[0] for line in str(excinfo.value).splitlines()[1:]] == [
        f"{train}:2",
        f"{train}:3",
        f"{train}:4",
        f"{dev}:3",
    ]


@pytest.mark.parametrize("joined", ["text,label\n", "\ufefftext,label\n"], ids=["plain", "with-bom"])
def test_repeated_header_row_is_refused_not_read_as_a_label(tmp_path: Path, joined: str) -> None:
    """Two CSVs joined with `cat`: the second header would otherwise become a class called 'label'."""
    train = tmp_path / "train.csv"
    train.write_text(f"text,label\na,pos\nb,neg\n{joined}c,pos\nd,neg\n", encoding="utf-8")

    with pytest.raises(DataError, match=_at(train, 4) + "repeats the header row"):
        _load(train, dev=_csv(tmp_path / "dev.csv", _rows(2)))


def test_header_that_is_not_utf8_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"t\xe9xt,label\na,pos\n")

    with pytest.raises(DataError, match=_at(path, 1) + re.escape("not UTF-8 (byte 0xe9 at column 2)")):
        _load(path)


def test_duplicate_column_name_in_header_is_refused_at_line_1(tmp_path: Path) -> None:
    path = _csv(tmp_path / "train.csv", [["a", "b", "pos"]], header=("text", "text", "label"))

    with pytest.raises(
        DataError, match=_at(path, 1) + r"column 'text' appears twice in the header \(columns 1 and 2\)"
    ):
        read_table(path)


def test_jsonl_duplicate_key_is_refused_with_file_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"text": "a", "label": "pos"}\n{"text": "b", "label": "pos", "label": "neg"}\n', encoding="utf-8"
    )

    with pytest.raises(DataError, match=_at(path, 2) + "key 'label' appears twice"):
        read_table(path)


def test_labels_with_surrounding_whitespace_are_stripped_in_every_file_with_one_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = _csv(tmp_path / "train.csv", [["a", " pos "], ["b", "neg"], ["c", "pos"], ["d", "neg\t"]])
    dev = _csv(tmp_path / "dev.csv", [["e", "pos"], ["f", " neg"]])

    with caplog.at_level(logging.WARNING, logger="tunelab.data.checks"):
        data = _load(train, dev=dev)

    assert data.labels == ["neg", "pos"]
    assert data.train["label"] == ["pos", "neg", "pos", "neg"]
    assert data.dev["label"] == ["pos", "neg"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{train}: stripped surrounding whitespace from 2 label cells (first {train}:2: ' pos ')",
        f"{dev}: stripped surrounding whitespace from 1 label cells (first {dev}:3: ' neg')",
    ]


def test_damaged_parquet_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1 not really parquet")

    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable Parquet file")):
        read_table(path)
