"""Tagged sentences for token classification: CoNLL and JSONL readers, tagging-scheme checks, splits.

Hand-written because ``datasets`` has no CoNLL builder that keeps each token's source line, and every
bad tag or forbidden transition must be reported as ``file:line`` (all of them at once). Sentences
become rows with ``tokens`` and ``tags`` (lists of strings).

CoNLL: one token a line, ``token<TAB>tag`` (or whitespace-separated columns, the tag last, as in
CoNLL-2003); a line holding only whitespace ends a sentence; ``-DOCSTART-`` lines are skipped. A
token that is only whitespace (U+3000, NBSP) is an error naming the character: a tokenizer gives it no
sub-word, so its tag could never be learnt or predicted.
JSONL: one sentence per line, ``{"tokens": [...], "tags": [...]}`` of equal length.
Pre-split sentences to predict on (:func:`read_word_sentences`) are either, tags optional.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from tunelab.config import DataConfig
from tunelab.data import TaskData
from tunelab.data.readers import Problems, Table, read_table, text_lines
from tunelab.data.splits import subsample
from tunelab.errors import DataError

SCHEMES = ("BIO", "IOB2", "BIOES")
_TAG = {"BIO": re.compile(r"O|[BI]-\S+"), "BIOES": re.compile(r"O|[BIES]-\S+")}
# BIOES: which prefixes may follow each prefix of the same type ("" = sentence end / a new entity).
_BIOES_NEXT = {"B": "IE", "I": "IE"}


@dataclass
class Sentences:
    """Tagged sentences of one file plus where each token came from (for error messages)."""

    path: Path
    tokens: list[list[str]] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    where: list[list[str]] = field(default_factory=list)  # file:line (CoNLL) or file:line token i (JSONL)


def whitespace_only(token: str) -> str | None:
    """Why ``token`` is no word when it is only whitespace (naming its characters), else None."""
    if token.strip():
        return None
    names = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, '')}".rstrip() for c in dict.fromkeys(token))
    return (
        f"token is only whitespace ({names}); delete the line or replace the token with a visible character"
    )


def _conll_lines(path: Path, problems: Problems) -> Iterator[tuple[str, str, list[str]] | None]:
    """Each line of a CoNLL file as (file:line, the line, its columns), or None where a sentence ends.

    A line with a tab splits at tabs, else at whitespace; a line starting with a non-ASCII space
    (ideographic, no-break) holds a whitespace-only token, reported to ``problems``.
    """
    for number, raw in text_lines(path, problems):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            yield None
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        lead = fields[0] if "\t" in line else line[: len(line) - len(line.lstrip())].strip(" ")
        why = whitespace_only(lead) if lead else None
        if why is not None:
            problems.add(f"{path}:{number}", why)
            continue
        yield f"{path}:{number}", line, [f.strip() for f in fields]
    yield None


def read_conll(path: Path, problems: Problems) -> Sentences:
    """Sentences of a CoNLL file; a token line without a tag goes to ``problems``."""
    out = Sentences(path)
    tokens: list[str] = []
    tags: list[str] = []
    where: list[str] = []
    for line in _conll_lines(path, problems):
        if line is None:
            if tokens:
                out.tokens.append(tokens.copy())
                out.tags.append(tags.copy())
                out.where.append(where.copy())
            for column in (tokens, tags, where):
                column.clear()
            continue
        at, text, fields = line
        token, tag = fields[0], fields[-1] if len(fields) > 1 else ""
        if not token or not tag:
            problems.add(at, f"expected 'token<TAB>tag', got {text!r}")
            continue
        tokens.append(token)
        tags.append(tag)
        where.append(at)
    return out


def _strings(value: object) -> bool:
    """A non-empty list of strings."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _json_words(table: Table, i: int, key: str, problems: Problems) -> list[str] | None:
    """Row ``i``'s ``key`` list of strings, or None after reporting why it is not one."""
    value = table.columns.get(key, [None] * len(table.lines))[i]
    if not _strings(value):
        problems.add(table.where(i), f"expected a non-empty {key!r} list of non-empty strings")
        return None
    bad = [(j, why) for j, word in enumerate(value) if (why := whitespace_only(word)) is not None]
    for j, why in bad:
        problems.add(f"{table.where(i)} token {j}", why)
    return None if bad else list(value)


def read_tagged_jsonl(path: Path, problems: Problems) -> Sentences:
    """Sentences of a JSONL file with ``tokens`` and ``tags`` lists of equal length."""
    table = read_table(path, problems)
    out = Sentences(path)
    for i in range(len(table.lines)):
        tokens, tags = (_json_words(table, i, key, problems) for key in ("tokens", "tags"))
        if tokens is None or tags is None:
            continue
        if len(tokens) != len(tags):
            problems.add(table.where(i), f"{len(tokens)} tokens but {len(tags)} tags; give one tag per token")
            continue
        out.tokens.append(tokens)
        out.tags.append(tags)
        out.where.append([f"{table.where(i)} token {j}" for j in range(len(tokens))])
    return out


def read_word_sentences(path: Path, column: str = "tokens") -> list[list[str]]:
    """Pre-split sentences to predict on: a CoNLL file's first column, or a JSONL file's word lists.

    Tags, when the file has them (a test file), are ignored; every bad line is reported at once.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    problems, sentences = Problems(), []
    if path.suffix.lower() in (".jsonl", ".json"):
        table = read_table(path, problems)
        rows = (_json_words(table, i, column, problems) for i in range(len(table.lines)))
        sentences = [words for words in rows if words is not None]
    else:
        words: list[str] = []
        for line in _conll_lines(path, problems):
            if line is not None and not line[2][0]:
                problems.add(line[0], f"expected a token first, got {line[1]!r}")
            elif line is not None:
                words.append(line[2][0])
            elif words:
                sentences.append(words.copy())
                words.clear()
    problems.raise_if_any()
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences


def read_sentences(path: Path, problems: Problems) -> Sentences:
    """CoNLL or JSONL by suffix (.jsonl/.json is JSONL, anything else CoNLL)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (shipped datasets: `tunelab data prepare NAME DIR`)")
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    sentences = read_tagged_jsonl(path, problems) if jsonl else read_conll(path, problems)
    if not sentences.tokens and not problems.messages:
        raise DataError(f"{path}: no tagged sentences")
    return sentences


def _transition_error(prev: str, tag: str, scheme: str) -> str | None:
    """Why ``prev -> tag`` is forbidden by ``scheme`` (``prev`` "O" at a sentence start), or None."""
    p_kind, _, p_type = prev.partition("-")
    kind, _, typ = tag.partition("-")
    if scheme == "BIOES":
        continues = p_kind in _BIOES_NEXT
        if continues and not (kind in _BIOES_NEXT[p_kind] and typ == p_type):
            return f"{prev!r} must be followed by I-{p_type} or E-{p_type}, not {tag!r}"
        if not continues and kind in ("I", "E"):
            return f"{tag!r} cannot follow {prev!r}; an entity starts with B- or S-"
        return None
    if kind == "I" and p_type != typ:
        return f"{tag!r} cannot follow {prev!r}; an entity starts with B-{typ}"
    return None


def check_scheme(sentences: Sentences, scheme: str, known: Sequence[str] | None, problems: Problems) -> None:
    """Every tag in ``scheme`` (and in ``known`` when given), every transition allowed by it."""
    scheme = "BIO" if scheme == "IOB2" else scheme
    pattern, allowed = _TAG[scheme], set(known) if known is not None else None
    prefixes = "/".join(scheme[:-1]) if scheme == "BIO" else "B/I/E/S"
    for tags, where in zip(sentences.tags, sentences.where, strict=True):
        prev = "O"
        for tag, at in zip(tags, where, strict=True):
            if not pattern.fullmatch(tag):
                problems.add(at, f"tag {tag!r} is not in the {scheme} scheme (O or {prefixes}-TYPE)")
                tag = "O"
            elif allowed is not None and tag not in allowed:
                problems.add(at, f"tag {tag!r} is not in labels; fix the row or add it to task.params.labels")
            elif (why := _transition_error(prev, tag, scheme)) is not None:
                problems.add(at, why)
            prev = tag
        if scheme == "BIOES" and prev[:2] in ("B-", "I-"):
            problems.add(where[-1], f"the sentence ends inside an entity ({prev!r}); close it with E-")


def sorted_tags(tag_lists: Sequence[Sequence[str]]) -> list[str]:
    """Tag order when none is configured: ``O`` first, then by entity type, then by prefix (B, I, E, S)."""
    unique = {tag for tags in tag_lists for tag in tags} - {"O"}
    return ["O", *sorted(unique, key=lambda t: (t.partition("-")[2], "BIES".find(t[0])))]


def _dataset(sentences: Sentences, indices: Sequence[int]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"tokens": [sentences.tokens[i] for i in indices], "tags": [sentences.tags[i] for i in indices]},
        features=datasets.Features(
            {name: datasets.Sequence(datasets.Value("string")) for name in ("tokens", "tags")}
        ),
    )


def read_tagged_file(path: Path, scheme: str, labels: Sequence[str] | None) -> datasets.Dataset:
    """One checked file of tagged sentences (``tokens``, ``tags`` columns)."""
    problems = Problems()
    sentences = read_sentences(path, problems)
    check_scheme(sentences, scheme, labels, problems)
    problems.raise_if_any()
    return _dataset(sentences, range(len(sentences.tokens)))


def load_tagged_data(cfg: DataConfig, scheme: str, labels: Sequence[str] | None, seed: int) -> TaskData:
    """Read and check train/dev/test tagged sentences; a seeded random dev split when no dev file.

    Every bad line of every file is reported at once, so a run never starts on partial data.
    """
    problems = Problems()
    train = read_sentences(cfg.train_file, problems)
    dev = read_sentences(cfg.dev_file, problems) if cfg.dev_file else None
    test = read_sentences(cfg.test_file, problems) if cfg.test_file else None
    names = list(labels) if labels is not None else sorted_tags(train.tags)
    for sentences in (s for s in (train, dev, test) if s is not None):
        check_scheme(sentences, scheme, names, problems)
    problems.raise_if_any()

    n_train = len(train.tokens)
    train_idx = list(range(n_train))
    if dev is None:
        order = np.random.default_rng(seed).permutation(n_train)
        n_dev = max(1, round(n_train * cfg.dev_ratio))
        dev, dev_idx, train_idx = train, sorted(order[:n_dev].tolist()), sorted(order[n_dev:].tolist())
    else:
        dev_idx = list(range(len(dev.tokens)))
    train_keep = [train_idx[i] for i in subsample(len(train_idx), cfg.max_train_samples, seed)]
    dev_keep = [dev_idx[i] for i in subsample(len(dev_idx), cfg.max_eval_samples, seed)]
    return TaskData(
        train=_dataset(train, train_keep),
        dev=_dataset(dev, dev_keep),
        test=_dataset(test, subsample(len(test.tokens), cfg.max_eval_samples, seed)) if test else None,
        labels=names,
    )
