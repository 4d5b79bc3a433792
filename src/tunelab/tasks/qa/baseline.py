"""Sliding-window lexical-overlap answerer: the reference point a trained QA model must beat.

After Richardson et al. (2013, MCTest): slide a window of ``window`` words over the context and
keep the window sharing the most question content words. Inside it, candidate answers are runs of
at most ``max_answer_words`` words that are neither question words nor stopwords, not crossing
punctuation; the chosen run is
the one closest to the matched question words (sum of 1/(1+distance)). When the best window covers
less than ``min_overlap`` of the question's content words the answer is "" (no answer, SQuAD v2).
Hand-written: no library ships this baseline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from tunelab.tasks.qa.squad_metric import squad_scores

_WORD = re.compile(r"[\w'£$%.,-]*\w[%]?|[£$]\S+", re.UNICODE)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "many",
        "much",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "as",
        "into",
        "than",
        "s",
        "he",
        "she",
        "they",
        "his",
        "her",
        "their",
        "there",
        "will",
        "would",
        "could",
        "should",
        "can",
        "may",
        "not",
        "no",
        "after",
        "before",
        "during",
    ]
)


def _stem(word: str) -> str:
    """Lowercase with a trailing plural/possessive s removed, so 'profits' matches 'profit'."""
    word = word.lower().strip(".,'")
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def answer(question: str, context: str, window: int, max_answer_words: int, min_overlap: float) -> str:
    """The baseline's answer text to one question ("" = no answer)."""
    q_words = {_stem(w) for w in _WORD.findall(question)} - STOPWORDS
    matches = list(_WORD.finditer(context))
    if not q_words or not matches:
        return ""
    stems = [_stem(m.group()) for m in matches]
    kinds = sorted(q_words)
    which = np.array([[s == k for s in stems] for k in kinds], dtype=np.int64)  # (Q, W)
    hit = cast(np.ndarray, which.any(axis=0))  # (W,); numpy's stub also admits a scalar (axis=None)
    width = min(window, len(hit))
    counts = np.concatenate([np.zeros((len(kinds), 1), np.int64), which.cumsum(axis=1)], axis=1)
    distinct = ((counts[:, width:] - counts[:, :-width]) > 0).sum(axis=0)  # question words per window start
    tied = np.flatnonzero(distinct == distinct.max())
    lo = int(tied[len(tied) // 2])  # the middle of a run of equally good windows centres the match
    if distinct[lo] / len(q_words) < min_overlap:
        return ""
    content = np.array([not hit[i] and stems[i] not in STOPWORDS for i in range(len(stems))])
    hits = np.flatnonzero(hit[lo : lo + width]) + lo
    gaps = [context[a.end() : b.start()] for a, b in zip(matches, matches[1:], strict=False)]
    stop = [any(ch in gap for ch in ',.;:()"') for gap in gaps] + [True]  # punctuation ends a candidate
    best, best_score = None, -1.0
    i = lo
    while i < lo + width:
        if not content[i]:
            i += 1
            continue
        j = i
        while j + 1 < lo + width and content[j + 1] and not stop[j] and j + 1 - i < max_answer_words:
            j += 1
        span = np.arange(i, j + 1)
        score = float((1.0 / (1.0 + np.abs(span[:, None] - hits[None, :]))).sum()) / len(span)
        if score > best_score:
            best, best_score = (i, j), score
        i = j + 1
    if best is None:
        return ""
    return context[matches[best[0]].start() : matches[best[1]].end()]


def answer_all(
    questions: Sequence[str],
    contexts: Sequence[str],
    window: int = 20,
    max_answer_words: int = 4,
    min_overlap: float = 0.0,
) -> list[str]:
    """Baseline answers for every question, in order."""
    return [
        answer(q, c, window, max_answer_words, min_overlap) for q, c in zip(questions, contexts, strict=True)
    ]


def fit_min_overlap(
    questions: Sequence[str], contexts: Sequence[str], golds: Sequence[Sequence[str]], window: int = 20
) -> float:
    """The no-answer cut-off with the best F1 on the given (training) questions; 0 answers everything."""
    grid = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
    scores = [squad_scores(answer_all(questions, contexts, window, min_overlap=t), golds)["f1"] for t in grid]
    return grid[int(np.argmax(scores))]


def baseline_report(train: dict[str, list[Any]], dev: dict[str, list[Any]]) -> dict[str, Any]:
    """Fit the no-answer cut-off on ``train``, then score ``dev``; both are QA columns with answers."""
    cut = fit_min_overlap(train["question"], train["context"], [a["text"] for a in train["answers"]])
    preds = answer_all(dev["question"], dev["context"], min_overlap=cut)
    return {**squad_scores(preds, [a["text"] for a in dev["answers"]]), "min_overlap": cut}
