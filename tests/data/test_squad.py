"""QA readers: SQuAD v1.1/v2 JSON and flat JSONL; a misplaced answer is reported by question id and place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunelab.data.squad import read_qa, read_questions
from tunelab.errors import DataError

CONTEXT = "Ask Jeeves made a profit of $17m in the quarter, while Google made $204m."


def _squad(path: Path, qas: list[dict[str, Any]]) -> Path:
    doc = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_squad_v2_json_keeps_answers_and_empties_impossible(tmp_path: Path) -> None:
    path = _squad(
        tmp_path / "d.json",
        [
            {
                "id": "a",
                "question": "How much did Google make?",
                "answers": [{"text": "$204m", "answer_start": 67}],
            },
            {
                "id": "b",
                "question": "Who runs it?",
                "answers": [],
                "is_impossible": True,
                "plausible_answers": [{"text": "Ask Jeeves", "answer_start": 0}],
            },
        ],
    )
    cols = read_qa(path)
    assert cols["id"] == ["a", "b"]
    assert cols["context"] == [CONTEXT, CONTEXT]
    assert cols["answers"] == [{"text": ["$204m"], "answer_start": [67]}, {"text": [], "answer_start": []}]


def test_read_flat_jsonl(tmp_path: Path) -> None:
    row = {
        "id": "q1",
        "question": "What profit?",
        "context": CONTEXT,
        "answers": {"text": ["$17m"], "answer_start": [28]},
    }
    cols = read_qa(
        _jsonl(tmp_path / "d.jsonl", [row, {**row, "id": "q2", "answers": {"text": [], "answer_start": []}}])
    )
    assert cols["answers"][0] == {"text": ["$17m"], "answer_start": [28]}
    assert cols["answers"][1]["text"] == []


def test_misplaced_answers_reported_all_at_once_with_question_id_and_location(tmp_path: Path) -> None:
    rows = [
        {
            "id": "ok",
            "question": "q?",
            "context": CONTEXT,
            "answers": {"text": ["$17m"], "answer_start": [28]},
        },
        {
            "id": "shifted",
            "question": "q?",
            "context": CONTEXT,
            "answers": {"text": ["$17m"], "answer_start": [27]},
        },
        {
            "id": "absent",
            "question": "q?",
            "context": CONTEXT,
            "answers": {"text": ["Yahoo"], "answer_start": [0]},
        },
        {"id": "ok", "question": "", "context": CONTEXT, "answers": {"text": [], "answer_start": []}},
    ]
    with pytest.raises(DataError) as err:
        read_qa(_jsonl(tmp_path / "bad.jsonl", rows))
    message = str(err.value)
    assert "bad.jsonl:2: question 'shifted': answer '$17m' is not at answer_start 27" in message
    assert "the text occurs at 28" in message
    assert "bad.jsonl:3: question 'absent'" in message
    assert "not in the context" in message
    assert "bad.jsonl:4: duplicate question id 'ok'" in message
    assert "empty question" in message


def test_squad_json_error_names_json_path(tmp_path: Path) -> None:
    path = _squad(
        tmp_path / "d.json",
        [
            {"id": "x", "question": "q?", "answers": [{"text": "Google", "answer_start": 3}]},
            {"id": "y", "question": "q?", "answers": []},
        ],
    )
    with pytest.raises(DataError) as err:
        read_qa(path)
    assert (
        "d.json:data[0].paragraphs[0].qas[0]: question 'x': answer 'Google' is not at answer_start 3"
        in str(err.value)
    )
    assert "qas[1]: question 'y': no answers; mark it 'is_impossible': true" in str(err.value)


def test_malformed_json_and_wrong_layout(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"data": [\n  {oops}\n]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.json:2: not valid JSON"):
        read_qa(tmp_path / "broken.json")
    (tmp_path / "flat.json").write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(DataError, match=r"expected a SQuAD object with a 'data' list"):
        read_qa(tmp_path / "flat.json")


def test_read_questions_requires_question_and_context(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "q.jsonl", [{"question": "What?", "context": CONTEXT}, {"question": "Who?"}])
    with pytest.raises(DataError, match=r"q.jsonl:2: missing or empty 'context'"):
        read_questions(path)
    good = read_questions(_jsonl(tmp_path / "g.jsonl", [{"question": "What?", "context": CONTEXT}]))
    assert good == {"id": ["0"], "question": ["What?"], "context": [CONTEXT]}
