"""Training-time text augmentation: pure, seeded EDA operations and the collator that applies them.

EDA (Wei & Zou 2019): random swap, deletion, insertion and synonym replacement over whitespace words,
or for Chinese over characters (``unit: char``) or over words segmented by ``jieba`` (``unit:
zh_word``; its dictionary ships in the package, segmentation is deterministic). Synonym replacement
needs a synonym map: no offline synonym resource ships with tunelab's dependencies (nltk's PyPI
package carries no WordNet data), so it reads one from ``synonyms_file`` (``word<TAB>syn1,syn2``);
without it random insertion copies a word of the sentence instead of inserting a synonym. Each
function is ``(units, n, rng) -> units`` with a ``numpy`` Generator, so a given seed always gives
the same edit.

``AugmentingCollator`` edits each training batch as it is collated and re-tokenises it. Its
generator is seeded by (seed, the batch's row indices); batches are a pure function of (seed,
epoch) (``batching.epoch_batches``), so every epoch draws new edits and a resumed run redraws
exactly the ones the interrupted run saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config import AugmentConfig
from tunelab.data.readers import Problems, text_lines
from tunelab.errors import DataError

Synonyms = Mapping[str, Sequence[str]]
Tokenize = Callable[[dict[str, list[str]]], dict[str, list[Any]]]


def load_synonyms(path: Path) -> dict[str, list[str]]:
    """``word<TAB>syn1,syn2`` lines -> map; malformed lines are reported with file:line."""
    if not path.is_file():
        raise DataError(f"{path}: synonyms file not found (data.augment.synonyms_file)")
    out: dict[str, list[str]] = {}
    problems = Problems()
    for number, raw in text_lines(path, problems):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        word, sep, syns = line.partition("\t")
        if not sep or not syns.strip():
            problems.add(f"{path}:{number}", "expected word<TAB>synonym[,synonym...]")
            continue
        out[word.strip().lower()] = [s.strip() for s in syns.split(",") if s.strip()]
    problems.raise_if_any()
    return out


def random_swap(units: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Swap two random positions, ``n`` times."""
    units = list(units)
    if len(units) < 2:
        return units
    for _ in range(n):
        i, j = rng.choice(len(units), size=2, replace=False)
        units[i], units[j] = units[j], units[i]
    return units


def random_delete(units: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drop each unit with probability ``p``; one random unit survives if all would go."""
    if len(units) < 2:
        return list(units)
    keep = rng.random(len(units)) >= p
    if not keep.any():
        keep[rng.integers(len(units))] = True
    return [u for u, k in zip(units, keep, strict=True) if k]


def random_insert(units: list[str], n: int, rng: np.random.Generator, synonyms: Synonyms) -> list[str]:
    """Insert, ``n`` times, a synonym of a random unit (or the unit itself) at a random position."""
    units = list(units)
    if not units:
        return units
    for _ in range(n):
        word = units[rng.integers(len(units))]
        options = synonyms.get(word.lower()) or [word]
        units.insert(int(rng.integers(len(units) + 1)), options[int(rng.integers(len(options)))])
    return units


def synonym_replace(units: list[str], n: int, rng: np.random.Generator, synonyms: Synonyms) -> list[str]:
    """Replace up to ``n`` random units that have synonyms with one of them."""
    units = list(units)
    candidates = [i for i, u in enumerate(units) if synonyms.get(u.lower())]
    for i in rng.permutation(candidates)[:n] if candidates else []:
        options = synonyms[units[i].lower()]
        units[i] = options[int(rng.integers(len(options)))]
    return units


def text_units(text: str, unit: str) -> list[str]:
    """``text`` split into the units EDA edits: whitespace words, characters, or jieba's Chinese words."""
    if unit == "char":
        return list(text)
    if unit == "zh_word":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # it logs its dictionary load at INFO
        words: list[str] = jieba.lcut(text)
        return words
    return text.split()


def augment_text(text: str, cfg: AugmentConfig, rng: np.random.Generator, synonyms: Synonyms) -> str:
    """One EDA operation, drawn from ``cfg.ops``, on ``text`` split into ``cfg.unit`` units."""
    units = text_units(text, cfg.unit)
    n = max(1, round(cfg.alpha * len(units)))
    op = cfg.ops[rng.integers(len(cfg.ops))]
    if op == "swap":
        units = random_swap(units, n, rng)
    elif op == "delete":
        units = random_delete(units, cfg.alpha, rng)
    elif op == "insert":
        units = random_insert(units, n, rng, synonyms)
    else:
        units = synonym_replace(units, n, rng, synonyms)
    return (" " if cfg.unit == "word" else "").join(units)


def augment_example(
    example: Mapping[str, Any], cfg: AugmentConfig, rng: np.random.Generator, synonyms: Synonyms
) -> dict[str, Any]:
    """A copy of ``example`` whose text columns are augmented with probability ``cfg.prob``."""
    out = dict(example)
    if rng.random() < cfg.prob:
        for column in ("text", "text_pair"):
            if out.get(column):
                out[column] = augment_text(out[column], cfg, rng, synonyms)
    return out


class AugmentingCollator:
    """Collates training rows that carry ``row`` and ``text``: augment, re-tokenise, then pad.

    Rows without ``text`` (dev and test features) go straight to the base collator, so one collator
    serves training and evaluation. A row's ``labels`` ride along unchanged; unlabelled rows have none.
    """

    def __init__(
        self,
        base: Callable[[list[dict[str, Any]]], Any],
        tokenize: Tokenize,
        cfg: AugmentConfig,
        seed: int,
        synonyms: Synonyms,
    ) -> None:
        self.base, self.tokenize, self.cfg, self.seed, self.synonyms = base, tokenize, cfg, seed, synonyms

    def __call__(self, rows: list[dict[str, Any]]) -> Any:
        """The batch of ``rows``: augmented and re-tokenised when they carry ``text``, then padded.

        The augmentation RNG is seeded by the run seed and the rows' ``row`` ids, so a batch of the
        same rows is augmented the same way whatever process builds it.
        """
        if not rows or "text" not in rows[0]:
            return self.base(rows)
        rng = np.random.default_rng([self.seed, *(int(r["row"]) for r in rows)])
        edited = [augment_example(r, self.cfg, rng, self.synonyms) for r in rows]
        columns = {"text": [r["text"] for r in edited]}
        if "text_pair" in rows[0]:
            columns["text_pair"] = [r["text_pair"] for r in edited]
        features = self.tokenize(columns)
        out = [dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)]
        for feature, row in zip(out, rows, strict=True):
            if "labels" in row:  # unlabelled rows (self-training's student view) carry none
                feature["labels"] = row["labels"]
        return self.base(out)
