"""QA features: question + context windows (doc stride), character offsets, start/end token labels.

A context longer than ``max_length`` becomes several overlapping windows (features) of one example,
``doc_stride`` tokens of overlap apart, as in the SQuAD recipe of the BERT paper. Every feature keeps
the index of its example and the character span of each context token (``[-1, -1]`` for question,
special and padding tokens), so span post-processing maps token positions back to exact substrings
of the original context. The question comes first and the context second (``truncation="only_second"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Features = dict[str, list[Any]]
NO_SPAN = -1


def tokenize_windows(
    questions: Sequence[str], contexts: Sequence[str], tokenizer: Any, max_length: int, doc_stride: int
) -> Features:
    """Overlapping windows with ``example_index`` and context-only ``offset_mapping`` per feature.

    Questions are left-stripped: leading spaces would only waste window tokens.
    """
    enc = tokenizer(
        [q.lstrip() for q in questions],
        list(contexts),
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    offsets = []
    for i, pairs in enumerate(enc["offset_mapping"]):
        in_context = np.asarray(enc.sequence_ids(i), dtype=object) == 1  # (L,)
        spans = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        spans[~in_context] = NO_SPAN
        offsets.append(spans.tolist())
    out: Features = {
        k: v for k, v in enc.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")
    }
    out["example_index"] = list(enc["overflow_to_sample_mapping"])
    out["offset_mapping"] = offsets
    return out


def padded_offsets(offsets: Sequence[Sequence[Sequence[int]]], length: int | None = None) -> np.ndarray:
    """(F, L, 2) int array of character spans, padded with ``NO_SPAN``; L = longest feature by default."""
    width = length or max((len(row) for row in offsets), default=0)
    out = np.full((len(offsets), width, 2), NO_SPAN, dtype=np.int64)
    for i, row in enumerate(offsets):
        if row:
            out[i, : len(row)] = row
    return out


def span_positions(
    offsets: np.ndarray, answer_starts: np.ndarray, answer_ends: np.ndarray, cls_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Start/end token index of each feature's answer; ``cls_index`` when it has none in the window.

    Args:
        offsets: (F, L, 2) character spans, ``NO_SPAN`` outside the context.
        answer_starts: (F,) first character of the answer, -1 for an unanswerable question.
        answer_ends: (F,) one past its last character.
        cls_index: the no-answer position (the [CLS] token for BERT-style models).

    The start token is the last context token starting at or before the answer's first character, the
    end token the first context token ending at or after its last one. A window that does not contain
    the whole answer is labelled as no-answer, as in the SQuAD v2 recipe.
    """
    starts, ends = offsets[..., 0], offsets[..., 1]  # (F, L)
    in_context = starts != NO_SPAN
    big = np.iinfo(np.int64).max
    first_char = np.where(in_context, starts, big).min(axis=1)  # (F,)
    last_char = np.where(in_context, ends, -1).max(axis=1)
    inside = (answer_starts >= 0) & (first_char <= answer_starts) & (last_char >= answer_ends)
    width = offsets.shape[1]
    begins = in_context & (starts <= answer_starts[:, None])
    start_tok = width - 1 - np.argmax(begins[:, ::-1], axis=1)  # last True
    finishes = in_context & (ends >= answer_ends[:, None])
    end_tok = np.argmax(finishes, axis=1)  # first True
    return np.where(inside, start_tok, cls_index), np.where(inside, end_tok, cls_index)


def first_answers(answers: Sequence[dict[str, list[Any]]]) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) characters of each example's first gold answer; (-1, -1) when unanswerable."""
    starts = np.array([a["answer_start"][0] if a["text"] else -1 for a in answers], dtype=np.int64)
    lengths = np.array([len(a["text"][0]) if a["text"] else 0 for a in answers], dtype=np.int64)
    return starts, np.where(starts >= 0, starts + lengths, -1)


def training_labels(
    features: Features, answers: Sequence[dict[str, list[Any]]]
) -> tuple[list[int], list[int]]:
    """``start_positions`` / ``end_positions`` for every feature, from its example's first answer.

    No-answer points at position 0, where BERT-style tokenizers put [CLS].
    """
    example = np.asarray(features["example_index"], dtype=np.int64)
    starts, ends = first_answers(answers)
    offsets = padded_offsets(features["offset_mapping"])
    start_pos, end_pos = span_positions(offsets, starts[example], ends[example])
    return start_pos.tolist(), end_pos.tolist()
