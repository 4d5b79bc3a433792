"""The shipped bbc-squad set: built from the installed BBC package, answers checked, split by article."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tunelab.assets import prepare_dataset
from tunelab.assets.bbc import QA_DIR
from tunelab.data.squad import read_qa


@pytest.fixture(scope="module")
def bbc_squad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qa") / "bbc-squad"
    prepare_dataset("bbc-squad", out)
    return out


def test_bbc_squad_answers_are_at_their_offsets_and_articles_do_not_cross_splits(bbc_squad: Path) -> None:
    train, dev = (read_qa(bbc_squad / name) for name in ("train.json", "dev.json"))  # read_qa checks offsets
    assert len(train["id"]) + len(dev["id"]) >= 300
    assert not set(train["context"]) & set(dev["context"])
    titles = {
        name: {a["title"] for a in json.loads((bbc_squad / name).read_text())["data"]}
        for name in ("train.json", "dev.json")
    }
    assert {t.split("/")[0] for t in titles["dev.json"]} == {
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    }
    answers = train["answers"] + dev["answers"]
    unanswerable = sum(not a["text"] for a in answers) / len(answers)
    assert 0.15 <= unanswerable <= 0.25


def test_shipped_questions_hold_no_article_text() -> None:
    rows = [
        json.loads(line) for line in (QA_DIR / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert all(set(row) == {"id", "article", "question", "answers"} for row in rows)
    assert max(Counter(row["id"] for row in rows).values()) == 1
    assert all(len(text) < 60 for row in rows for text in row["answers"]["text"])
