"""N-best answer spans over all windows of an example, with the SQuAD v2 no-answer decision.

For each feature the top-k start and top-k end logits form k x k candidate spans, scored
``start_logit + end_logit`` (Devlin et al., 2019, sec. 4.2-4.3). A span is valid when both ends are
context tokens, the end does not precede the start and it has at most ``max_answer_length`` tokens.
The null score of an example is the lowest [CLS] score over its windows; the example is unanswered
when ``null_score - best_span_score > null_threshold``. Hand-written because transformers ships this
only inside its example scripts, not as a library function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab.tasks.qa.features import NO_SPAN


def feature_candidates(
    start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray, n_best: int, max_answer_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Valid spans of every feature at once.

    Args:
        start_logits: (F, L) start score per feature and token; positions beyond a feature's
            length hold any value.
        end_logits: (F, L) end score, as ``start_logits``.
        offsets: (F, L, 2) character spans, ``NO_SPAN`` outside the context (and on padding).
        n_best: k start and k end positions per feature.
        max_answer_length: longest span, in tokens.

    Returns:
        feature index, start char, end char (exclusive) and score of every valid candidate (flat arrays).
    """
    k = min(n_best, start_logits.shape[1])
    masked_start = np.where(offsets[..., 0] != NO_SPAN, start_logits, -np.inf)
    masked_end = np.where(offsets[..., 1] != NO_SPAN, end_logits, -np.inf)
    top_s = np.argsort(-masked_start, axis=1, kind="stable")[:, :k]  # (F, k)
    top_e = np.argsort(-masked_end, axis=1, kind="stable")[:, :k]
    s_idx = np.broadcast_to(top_s[:, :, None], (len(top_s), k, k))  # (F, k, k)
    e_idx = np.broadcast_to(top_e[:, None, :], (len(top_e), k, k))
    rows = np.arange(len(top_s))[:, None, None]
    score = masked_start[rows, s_idx] + masked_end[rows, e_idx]
    length = e_idx - s_idx + 1
    valid = np.isfinite(score) & (length >= 1) & (length <= max_answer_length)
    feat = np.broadcast_to(rows, s_idx.shape)[valid]
    return feat, offsets[feat, s_idx[valid], 0], offsets[feat, e_idx[valid], 1], score[valid]


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max())
    probs: np.ndarray = shifted / shifted.sum()
    return probs


def best_answers(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    example_index: Sequence[int],
    contexts: Sequence[str],
    n_best: int,
    max_answer_length: int,
    null_threshold: float | None,
) -> list[dict[str, Any]]:
    """One prediction per context: the best span over all its windows, or no answer.

    ``null_threshold`` None means SQuAD v1.1 behaviour (always answer when any span is valid).
    ``score`` is the softmax probability of the chosen candidate among the example's n best spans
    and the null answer, so it is comparable across examples. ``null_score_diff`` (null score minus
    best span score; None without a valid span) is what the threshold is compared with.
    """
    example = np.asarray(example_index, dtype=np.int64)
    feat, char_s, char_e, score = feature_candidates(
        start_logits, end_logits, offsets, n_best, max_answer_length
    )
    null_per_feature = start_logits[:, 0] + end_logits[:, 0]  # (F,)
    owner = example[feat]
    out = []
    for i, context in enumerate(contexts):
        mine = np.flatnonzero(owner == i)
        order = mine[np.argsort(-score[mine], kind="stable")][:n_best]
        windows = example == i
        null = float(null_per_feature[windows].min()) if windows.any() else 0.0
        probs = _softmax(np.append(score[order], null)) if len(order) else np.ones(1)
        spans = [
            {
                "text": context[char_s[j] : char_e[j]],
                "start": int(char_s[j]),
                "end": int(char_e[j]),
                "score": float(p),
            }
            for j, p in zip(order, probs[:-1], strict=True)
        ]
        diff = null - float(score[order[0]]) if len(order) else None
        # spans is non-empty exactly when diff is set (both come from a non-empty ``order``).
        answered = bool(spans) and diff is not None and (null_threshold is None or diff <= null_threshold)
        best = spans[0] if answered else {"text": "", "start": None, "end": None, "score": float(probs[-1])}
        out.append(
            {
                "answer": best["text"],
                "start": best["start"],
                "end": best["end"],
                "score": best["score"],
                "no_answer": not answered,
                "null_score_diff": diff,
                "n_best": spans,
            }
        )
    return out
