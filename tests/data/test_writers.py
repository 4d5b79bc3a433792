"""data.writers: every file a converter writes reads back unchanged through tunelab's own readers."""

from __future__ import annotations

from pathlib import Path

from tunelab.data.readers import Problems, read_lines, read_table
from tunelab.data.tagging import read_conll
from tunelab.data.writers import write_conll, write_csv, write_jsonl, write_lines, write_splits

AWKWARD = ["plain", "a, comma", 'a "quote"', "two\nlines", "中文评论", "  padded  "]


def test_csv_round_trips_cells_that_need_quoting(tmp_path: Path) -> None:
    rows = [(text, f"label{i}") for i, text in enumerate(AWKWARD)]
    write_csv(tmp_path / "rows.csv", rows)
    table = read_table(tmp_path / "rows.csv")
    assert list(table.columns) == ["text", "label"]
    assert list(zip(table.columns["text"], table.columns["label"], strict=True)) == rows
    assert table.lines[4] == 7  # header, three rows, then the row holding a quoted newline (two lines)


def test_csv_takes_another_header(tmp_path: Path) -> None:
    write_csv(tmp_path / "pairs.csv", [("q", "a", "yes")], header=("text", "text_pair", "label"))
    assert read_table(tmp_path / "pairs.csv").columns == {"text": ["q"], "text_pair": ["a"], "label": ["yes"]}


def test_jsonl_round_trips_and_keeps_non_ascii_readable(tmp_path: Path) -> None:
    rows = [{"source": text, "target": str(i), "tags": ["x", "y"]} for i, text in enumerate(AWKWARD)]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    table = read_table(tmp_path / "rows.jsonl")
    assert table.columns == {key: [row[key] for row in rows] for key in rows[0]}
    assert "中文评论" in (tmp_path / "rows.jsonl").read_text(encoding="utf-8")


def test_lines_round_trip_one_text_per_line(tmp_path: Path) -> None:
    texts = ["第一句。", "second line", "a, b"]
    write_lines(tmp_path / "corpus.txt", texts)
    assert read_lines(tmp_path / "corpus.txt") == (texts, [])


def test_conll_round_trips_sentences(tmp_path: Path) -> None:
    sentences = [[("EU", "B-ORG"), ("rejects", "O")], [("北", "B-LOC"), ("京", "I-LOC")], [("ok", "O")]]
    write_conll(tmp_path / "ner.conll", sentences)
    problems = Problems()
    read = read_conll(tmp_path / "ner.conll", problems)
    assert not problems.messages
    assert read.tokens == [[token for token, _ in s] for s in sentences]
    assert read.tags == [[tag for _, tag in s] for s in sentences]
    assert (tmp_path / "ner.conll").read_text(encoding="utf-8").count("\n\n") == len(sentences) - 1


def test_write_splits_writes_each_file_and_counts_its_rows_in_order(tmp_path: Path) -> None:
    counts = write_splits(tmp_path, {"train.txt": ["a", "b", "c"], "dev.txt": ["d"]}, write_lines)
    assert list(counts.items()) == [("train.txt", 3), ("dev.txt", 1)]
    assert read_lines(tmp_path / "train.txt")[0] == ["a", "b", "c"]
    assert read_lines(tmp_path / "dev.txt")[0] == ["d"]
