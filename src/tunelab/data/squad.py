"""Extractive-QA readers: SQuAD v1.1/v2 JSON and flat JSONL, checked answer by answer.

Both formats become the same columns: ``id``, ``question``, ``context`` and ``answers``
(``{"text": [...], "answer_start": [...]}``; empty lists for an unanswerable SQuAD v2 question).

Hand-written because ``datasets``' JSON builder (``field="data"``) flattens the nested SQuAD layout
without keeping where each question came from, and an answer whose text is not at its
``answer_start`` must be reported by question id and location (JSON path or ``file:line``), every
bad question at once, before any weight loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.data.readers import Problems, read_table
from tunelab.errors import DataError
from tunelab.io import read_utf8

QAColumns = dict[str, list[Any]]
COLUMNS = ("id", "question", "context", "answers")


def _squad_records(path: Path, document: Any) -> Iterator[tuple[str, dict[str, Any], object]]:
    """(location, flat record, context) per question of a SQuAD document, locations as JSON paths.

    Records and contexts are yielded as read: ``read_qa`` checks them and reports every bad question.
    """
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: expected a SQuAD object with a 'data' list (data[].paragraphs[].qas[])")
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            where = f"{path}:data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise DataError(f"{where}: expected an object with 'context' and 'qas'")
            context = paragraph.get("context")
            for q, qa in enumerate(paragraph.get("qas", [])):
                if not isinstance(qa, dict):
                    raise DataError(f"{where}.qas[{q}]: expected an object with 'id', 'question', 'answers'")
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else qa.get("answers", [])
                if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
                    raise DataError(f"{where}.qas[{q}]: 'answers' must be a list of {{text, answer_start}}")
                record: dict[str, Any] = {
                    "id": qa.get("id"),
                    "question": qa.get("question"),
                    "answers": {
                        "text": [x.get("text") for x in answers],
                        "answer_start": [x.get("answer_start") for x in answers],
                    },
                    "is_impossible": impossible,
                }
                yield f"{where}.qas[{q}]", record, context


def _jsonl_records(path: Path, problems: Problems) -> Iterator[tuple[str, dict[str, Any], object]]:
    """(file:line, record, context) per line of a flat JSONL file; empty answers mean unanswerable.

    As :func:`_squad_records`, the context is yielded unchecked (it may be missing or not a string);
    lines that are not JSON objects go to ``problems``.
    """
    table = read_table(path, problems)
    for i in range(len(table.lines)):
        row = {name: values[i] for name, values in table.columns.items()}
        answers = row.get("answers")
        if answers is None:
            answers = {"text": [], "answer_start": []}
        yield table.where(i), {**row, "answers": answers, "is_impossible": None}, row.get("context")


def check_answers(
    where: str, qid: str, context: str, answers: Any, impossible: bool | None, problems: Problems
) -> None:
    """Each answer must be the exact text of ``context`` at its ``answer_start`` (character offset)."""
    if not isinstance(answers, dict) or not {"text", "answer_start"} <= answers.keys():
        problems.add(where, f"question {qid!r}: 'answers' must be {{text: [...], answer_start: [...]}}")
        return
    texts, starts = answers["text"], answers["answer_start"]
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        problems.add(where, f"question {qid!r}: answers.text and answers.answer_start differ in length")
        return
    if impossible is False and not texts:
        problems.add(where, f"question {qid!r}: no answers; mark it 'is_impossible': true (SQuAD v2)")
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(text, str) or not text.strip():
            problems.add(where, f"question {qid!r}: empty answer text")
        elif not isinstance(start, int) or isinstance(start, bool) or start < 0:
            problems.add(where, f"question {qid!r}: answer_start must be an integer >= 0, got {start!r}")
        elif context[start : start + len(text)] != text:
            found = context.find(text)
            hint = f"; the text occurs at {found}" if found >= 0 else "; the text is not in the context"
            problems.add(
                where,
                f"question {qid!r}: answer {text!r} is not at answer_start {start} "
                f"(context there: {context[start : start + len(text)]!r}){hint}",
            )


def read_qa(path: Path) -> QAColumns:
    """Checked QA columns from a SQuAD JSON file (``.json``) or a flat JSONL file (``.jsonl``).

    Raises one DataError listing every bad question: missing/duplicate id, empty question or context,
    an answer whose text is not at its ``answer_start``.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found (shipped QA data: `tunelab data prepare bbc-squad DIR`)")
    problems = Problems()
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(read_utf8(path, DataError))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); expected SQuAD JSON") from None
        records = _squad_records(path, document)
    elif path.suffix.lower() == ".jsonl":
        records = _jsonl_records(path, problems)
    else:
        raise DataError(f"{path}: unsupported QA file type {path.suffix!r}; use .json (SQuAD) or .jsonl")
    out: QAColumns = {name: [] for name in COLUMNS}
    seen: set[str] = set()
    for where, record, context in records:
        qid = record.get("id")
        if not isinstance(qid, (str, int)) or str(qid) == "":
            problems.add(where, "missing question id")
        elif str(qid) in seen:
            problems.add(where, f"duplicate question id {qid!r}")
        qid = str(qid)
        seen.add(qid)
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            problems.add(where, f"question {qid!r}: empty question")
        if not isinstance(context, str) or not context.strip():
            problems.add(where, f"question {qid!r}: empty context")
            context = ""
        check_answers(where, qid, context, record["answers"], record["is_impossible"], problems)
        out["id"].append(qid)
        out["question"].append(question or "")
        out["context"].append(context)
        out["answers"].append(record["answers"])
    problems.raise_if_any()
    if not out["id"]:
        raise DataError(f"{path}: no questions")
    return out


def read_questions(path: Path) -> QAColumns:
    """Unlabelled questions to answer: JSONL rows with ``question`` and ``context`` (``id`` optional)."""
    problems = Problems()
    table = read_table(path, problems)
    out: QAColumns = {"id": [], "question": [], "context": []}
    for i in range(len(table.lines)):
        row = {name: values[i] for name, values in table.columns.items()}
        for key in ("question", "context"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                problems.add(table.where(i), f"missing or empty {key!r}")
            out[key].append(row.get(key) or "")
        out["id"].append(str(row["id"]) if row.get("id") is not None else str(i))
    problems.raise_if_any()
    return out
