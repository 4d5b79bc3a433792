"""Tagged sentences for token classification: CoNLL and JSONL readers, tagging-scheme checks, splits.

Hand-written because ``datasets`` has no CoNLL builder that keeps each token's source line, and every
bad tag or forbidden transition must be reported as ``file:line`` (all of them at once). Sentences
become rows with ``tokens`` and ``tags`` (lists of strings).

CoNLL: one token a line, ``token<TAB>tag`` (or whitespace-separated columns, the tag last, as in
CoNLL-2003); a line holding only whitespace ends a sentence; ``-DOCSTART-`` lines are skipped.
JSONL: one sentence per line, ``{"tokens": [...], "tags": [...]}`` of equal length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from tunelab.config import DataConfig
from tunelab.data import TaskData
from tunelab.data.checks import Problems
from tunelab.data.readers import read_table
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


def read_conll(path: Path, problems: Problems) -> Sentences:
    """Sentences of a CoNLL file; a token line without a tag goes to ``problems``."""
    out = Sentences(path)
    tokens: list[str] = []
    tags: list[str] = []
    where: list[str] = []

    def close() -> None:
        if tokens:
            out.tokens.append(tokens.copy())
            out.tags.append(tags.copy())
            out.where.append(where.copy())
        for column in (tokens, tags, where):
            column.clear()

    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                close()
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            token, tag = fields[0].strip(), fields[-1].strip() if len(fields) > 1 else ""
            if not token or not tag:
                problems.add(f"{path}:{number}", f"expected 'token<TAB>tag', got {line!r}")
                continue
            tokens.append(token)
            tags.append(tag)
            where.append(f"{path}:{number}")
    close()
    return out


def _strings(value: object) -> bool:
    """A non-empty list of non-blank strings."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def read_tagged_jsonl(path: Path, problems: Problems) -> Sentences:
    """Sentences of a JSONL file with ``tokens`` and ``tags`` lists of equal length."""
    table = read_table(path)
    out = Sentences(path)
    for i in range(len(table.lines)):
        tokens, tags = (table.columns.get(key, [None] * len(table.lines))[i] for key in ("tokens", "tags"))
        if not (_strings(tokens) and _strings(tags) and len(tokens) == len(tags)):
            problems.add(
                table.where(i), "expected non-empty 'tokens' and 'tags' lists of strings of the same length"
            )
            continue
        out.tokens.append(tokens)
        out.tags.append(tags)
        out.where.append([f"{table.where(i)} token {j}" for j in range(len(tokens))])
    return out


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
