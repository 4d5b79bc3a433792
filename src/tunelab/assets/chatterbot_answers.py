"""ChatterBot dialogues (shipped in ``chatterbot-corpus``) -> answer-selection CSVs, English and Chinese.

``tunelab.data`` is imported inside the converters (see ``rotten_tomatoes``), and so is ``yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path

SPLIT_SEED = 0


def _pairs(folder: Path) -> list[tuple[str, str]]:
    """Distinct (user turn, next assistant turn) pairs of every dialogue, whitespace collapsed."""
    import yaml

    seen: dict[tuple[str, str], None] = {}
    for path in sorted(folder.glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            lines = [" ".join(str(line).split()) for line in conversation]
            for i in range(0, len(lines) - 1, 2):  # lines alternate user / assistant, user first
                if lines[i] and lines[i + 1]:
                    seen.setdefault((lines[i], lines[i + 1]), None)
    return list(seen)


def question_key(text: str) -> str:
    """What makes two questions the same for splitting: case, spaces and punctuation ignored."""
    return re.sub(r"[\W_]+", "", text.casefold())


def _prepare(folder: Path, out: Path) -> dict[str, int]:
    """Seeded 80/10/10 split by question (``question_key``), so no question has answers in two splits."""
    from tunelab.data.splits import three_way_split
    from tunelab.data.writers import write_csv, write_splits

    pairs = _pairs(folder)
    keys = sorted({question_key(q) for q, _ in pairs})
    train, dev, test = three_way_split(len(keys), seed=SPLIT_SEED)
    side = {keys[i]: name for name, ids in (("train", train), ("dev", dev), ("test", test)) for i in ids}
    splits: dict[str, list[tuple[str, str]]] = {"train.csv": [], "dev.csv": [], "test.csv": []}
    for query, positive in pairs:
        splits[f"{side[question_key(query)]}.csv"].append((query, positive))
    return write_splits(out, splits, lambda path, rows: write_csv(path, rows, header=("query", "positive")))


def prepare_chatterbot_answers(pkg: Path, out: Path) -> dict[str, int]:
    """English answer selection: 1,043 distinct pairs, 884 questions, 1,001 answers (848 / 102 / 93 rows).

    The corpus repeats many dialogues; questions that differ only in case or punctuation ("What is
    AI?", "what is ai") go to the same split.
    """
    return _prepare(pkg / "data" / "english", out)


def prepare_chatterbot_answers_zh(pkg: Path, out: Path) -> dict[str, int]:
    """Chinese answer selection: 504 distinct pairs, 403 questions, 486 answers (407 / 50 / 47 rows)."""
    return _prepare(pkg / "data" / "chinese", out)
