"""Faithfulness of explanations: comprehensiveness (DeYoung et al. 2020, ERASER), against random words.

An explanation is faithful when the words it ranks highest are the ones the model relies on. Deleting
the k top-scored words should then drop the explained label's probability more than deleting k words
drawn at random from the same input: ``deletion_drops`` measures both on the same model and record.
The explained word of a token-level task is never deleted (its tag is the target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunelab.inference.explain import Target, target_probabilities
from tunelab.inference.predict import Predictable


@dataclass(frozen=True)
class Drops:
    """Probability drops of one explanation at one k: the top-k deletion and the random draws' mean."""

    k: int
    top: float
    random: float


def without_words(
    record: Mapping[str, Any], explanation: Mapping[str, Any], drop: set[int]
) -> dict[str, Any]:
    """``record`` with the explanation's words ``drop`` deleted: list items, or their spans cut from text."""
    text = record["text"]
    if isinstance(text, list):
        return {**record, "text": [w for i, w in enumerate(text) if i not in drop]}
    cuts = sorted((explanation["words"][i]["start"], explanation["words"][i]["end"]) for i in drop)
    pieces, at = [], 0
    for start, end in cuts:
        pieces.append(text[at:start])
        at = end
    return {**record, "text": "".join(pieces) + text[at:]}


def _shifted(word: int | None, drop: set[int]) -> int | None:
    """The explained word's index once the words ``drop`` before it are gone."""
    return None if word is None else word - sum(i < word for i in drop)


def deletion_drops(
    art: Predictable,
    record: Mapping[str, Any],
    explanation: Mapping[str, Any],
    ks: Sequence[int],
    draws: int,
    rng: np.random.Generator,
) -> list[Drops]:
    """Per k: the target probability's drop with the k top-scored words deleted vs k random words.

    The random figure is the mean over ``draws`` deletions. A k needs more than k deletable words
    (else top and random delete the same words); smaller inputs get no entry for it. All variants of
    the record are scored in one batched pass (``inference.explain.target_probabilities``).
    """
    label, word = art.labels.index(explanation["target"]), explanation["word"]
    candidates = np.array([i for i in range(len(explanation["words"])) if i != word])
    scores = np.array([explanation["words"][i]["score"] for i in candidates])
    ranked = candidates[np.argsort(-scores, kind="stable")]
    variants: list[set[int]] = [set()]
    usable = [k for k in ks if len(candidates) > k]
    for k in usable:
        variants.append(set(ranked[:k].tolist()))
        variants += [set(rng.choice(candidates, k, replace=False).tolist()) for _ in range(draws)]
    items = [(without_words(record, explanation, d), Target(label, _shifted(word, d))) for d in variants]
    probs = target_probabilities(art, items)
    drops = probs[0] - probs[1:]
    per_k = drops.reshape(len(usable), 1 + draws) if usable else drops.reshape(0, 1 + draws)
    return [Drops(k, float(row[0]), float(row[1:].mean())) for k, row in zip(usable, per_k, strict=True)]
