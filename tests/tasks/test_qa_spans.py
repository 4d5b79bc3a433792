"""QA windows and spans: doc stride, offsets back to exact substrings, n-best limits, no-answer threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from tunelab.tasks.qa.features import (
    NO_SPAN,
    padded_offsets,
    span_positions,
    tokenize_windows,
    training_labels,
)
from tunelab.tasks.qa.spans import best_answers

FILLER = "the movie plot was very and story scene quite a it actor "


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


def _long_example() -> tuple[str, str, int]:
    """A context of ~70 words whose answer ('superb lovely') sits near the end."""
    context = (FILLER * 5) + "superb lovely " + FILLER
    return "which story was good", context, context.index("superb lovely")


def test_doc_stride_finds_answer_in_a_later_window_and_offsets_map_back(tokenizer) -> None:
    question, context, start = _long_example()
    feats = tokenize_windows([question], [context], tokenizer, max_length=32, doc_stride=8)
    assert len(feats["input_ids"]) >= 3
    assert set(feats["example_index"]) == {0}
    assert all(len(ids) <= 32 for ids in feats["input_ids"])
    s_pos, e_pos = training_labels(feats, [{"text": ["superb lovely"], "answer_start": [start]}])
    windows = [i for i, s in enumerate(s_pos) if s != 0]
    assert windows, "some window must hold the answer"
    assert windows[0] > 0, "the first window cannot hold the answer; a later one must"
    assert s_pos[0] == e_pos[0] == 0  # no answer in window 0 -> [CLS]
    for i in windows:
        offs = feats["offset_mapping"][i]
        assert context[offs[s_pos[i]][0] : offs[e_pos[i]][1]] == "superb lovely"
    for i, offs in enumerate(
        feats["offset_mapping"]
    ):  # every context token's offsets cut the context exactly
        ids = feats["input_ids"][i]
        for (a, b), tok in zip(offs, ids, strict=True):
            if a != NO_SPAN:
                piece = tokenizer.convert_ids_to_tokens(tok).removeprefix("##")
                assert piece == "[UNK]" or context[a:b].lower() == piece


def test_span_positions_cls_when_answer_crosses_window_edge() -> None:
    offsets = padded_offsets([[[-1, -1], [0, 4], [5, 9], [-1, -1]], [[-1, -1], [5, 9], [10, 14], [-1, -1]]])
    s, e = span_positions(offsets, np.array([0, 0]), np.array([9, 9]))
    assert s.tolist() == [1, 0]
    assert e.tolist() == [2, 0]
    s, e = span_positions(offsets, np.array([-1, -1]), np.array([-1, -1]))
    assert s.tolist() == [0, 0]
    assert e.tolist() == [0, 0]


def _logits(peaks: dict[int, float], width: int, base: float = -5.0) -> np.ndarray:
    row = np.full(width, base, dtype=np.float32)
    for i, v in peaks.items():
        row[i] = v
    return row


def test_best_answer_over_windows_respects_max_answer_length_and_context() -> None:
    context = "alpha beta gamma delta"
    offsets = padded_offsets([[[-1, -1], [0, 5], [6, 10], [-1, -1]], [[-1, -1], [6, 10], [11, 16], [17, 22]]])
    # window 0: best span alpha..beta; window 1 scores higher from 'beta' to 'delta'
    start = np.stack([_logits({1: 2.0}, 4), _logits({1: 4.0, 0: 9.0}, 4)])
    end = np.stack([_logits({2: 2.0}, 4), _logits({3: 4.0, 0: 9.0}, 4)])
    ans = best_answers(
        start, end, offsets, [0, 0], [context], n_best=3, max_answer_length=3, null_threshold=None
    )
    assert ans[0]["answer"] == "beta gamma delta"  # CLS logits (9.0) never become a span in v1 mode
    assert context[ans[0]["start"] : ans[0]["end"]] == ans[0]["answer"]
    short = best_answers(
        start, end, offsets, [0, 0], [context], n_best=3, max_answer_length=2, null_threshold=None
    )
    assert short[0]["answer"] == "alpha beta"  # the 3-token span is over the limit
    assert all(len(c["text"].split()) <= 2 for c in short[0]["n_best"])
    assert len(short[0]["n_best"]) <= 3


def test_no_answer_threshold_decides_between_null_and_best_span() -> None:
    context = "alpha beta"
    offsets = padded_offsets([[[-1, -1], [0, 5], [6, 10]]])
    start, end = (
        _logits({0: 3.0, 1: 2.0}, 3)[None],
        _logits({0: 3.0, 2: 2.0}, 3)[None],
    )  # null 6.0 vs span 4.0
    kw = {"n_best": 5, "max_answer_length": 5}
    assert best_answers(start, end, offsets, [0], [context], null_threshold=0.0, **kw)[0]["no_answer"]
    relaxed = best_answers(start, end, offsets, [0], [context], null_threshold=2.5, **kw)[0]
    assert not relaxed["no_answer"]
    assert relaxed["answer"] == "alpha beta"
    null = best_answers(start, end, offsets, [0], [context], null_threshold=0.0, **kw)[0]
    assert null["answer"] == ""
    assert null["start"] is None
    assert 0.0 < null["score"] <= 1.0
