"""SQuAD exact match and F1 with the official normalisation, with the v2 HasAns/NoAns breakdown.

Written here rather than taken from ``evaluate.load("squad")`` / ``"squad_v2"``: those fetch their
metric scripts from the Hugging Face hub at run time, which tunelab never does. This follows the
official SQuAD v2.0 evaluation script (``normalize_answer``, ``compute_exact``, ``compute_f1``):
lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace; F1 over the bag of
normalised tokens; a question scores the maximum over its gold answers; an unanswerable question
(no gold answer) scores 1 only for an empty prediction; ``best_thresholds`` is its
``find_best_thresh``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official SQuAD order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(gold: str, pred: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold answer, else 0.0."""
    return float(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    """Token-bag F1; if either side is empty (no-answer), 1 when both are empty, else 0."""
    gold_toks, pred_toks = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``exact_match`` and ``f1`` in percent, plus HasAns_/NoAns_ splits when both kinds occur.

    Args:
        predictions: predicted answer text per question ("" = no answer).
        golds: the gold answer texts per question (empty = unanswerable).
    """
    em_scores, f1_scores = [], []
    for pred, answers in zip(predictions, golds, strict=True):
        refs = [a for a in answers if normalize_answer(a)] or [""]
        em_scores.append(max(exact(a, pred) for a in refs))
        f1_scores.append(max(f1(a, pred) for a in refs))
    out: dict[str, Any] = {**_mean(em_scores, f1_scores, ""), "total": len(em_scores)}
    has = [bool(answers) for answers in golds]
    if any(has) and not all(has):
        for prefix, keep in (("HasAns_", True), ("NoAns_", False)):
            idx = [i for i, h in enumerate(has) if h == keep]
            out.update(_mean([em_scores[i] for i in idx], [f1_scores[i] for i in idx], prefix))
            out[f"{prefix}total"] = len(idx)
    return out


def best_thresholds(
    span_predictions: Sequence[str], null_diffs: Sequence[float | None], golds: Sequence[Sequence[str]]
) -> dict[str, float]:
    """``best_exact_match`` / ``best_f1`` and their thresholds, as the official v2 script reports them.

    Each question's best span is kept when its null-score difference is at most the threshold, else
    the answer is ""; the threshold that maximises the score on these questions is searched over the
    questions' own differences (``find_best_thresh`` of the official script). It is fitted on the
    scored set itself, so it is an upper bound, not a held-out figure.
    """
    out: dict[str, float] = {}
    order = sorted(range(len(golds)), key=lambda i: _diff_or_lowest(null_diffs[i]))
    for name, score in (("exact_match", exact), ("f1", f1)):
        current = best = float(sum(1 for answers in golds if not answers))  # everything answered ""
        thresh = min((d for d in null_diffs if d is not None), default=0.0) - 1.0
        for i in order:
            diff = null_diffs[i]
            if diff is None:
                continue
            refs = [a for a in golds[i] if normalize_answer(a)]
            current += max(score(a, span_predictions[i]) for a in refs) if refs else -1.0
            if current > best:
                best, thresh = current, float(diff)
        out[f"best_{name}"] = 100.0 * best / max(len(golds), 1)
        out[f"best_{name}_thresh"] = thresh
    return out


def _diff_or_lowest(diff: float | None) -> float:
    """Sort key of a null-score difference: questions without a span (None) come first."""
    return -math.inf if diff is None else diff


def _mean(em_scores: list[float], f1_scores: list[float], prefix: str) -> dict[str, float]:
    n = max(len(em_scores), 1)
    return {f"{prefix}exact_match": 100.0 * sum(em_scores) / n, f"{prefix}f1": 100.0 * sum(f1_scores) / n}
