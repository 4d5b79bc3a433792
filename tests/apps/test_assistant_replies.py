"""Reply quality of the assistant's paths (``apps.replies``): grouping by path, sources, the scores."""

from __future__ import annotations

from typing import Any

import pytest

from tunelab.apps.assistant import Decision
from tunelab.apps.replies import reply_quality, score_replies

HANDOFF = "A colleague will answer you."


def _decision(path: Any, best: str, reply: str | None) -> Decision:
    return Decision("greetings", 0.9, 0.5, [{"text": best, "score": 0.5}], path, reply)


def test_score_replies_takes_the_best_reference_and_exact_ignores_outer_spaces():
    scores = score_replies(
        ["I am a robot ", "hello", "我是机器人"], [["no", "I am a robot"], ["qq"], ["你好"]]
    )
    assert scores["exact"] == [1.0, 0.0, 0.0]
    assert scores["chrf"][0] == pytest.approx(100.0)
    assert scores["chrf"][1] == scores["chrf"][2] == pytest.approx(0.0)
    partial = score_replies(["I am a robot"], [["I am not a robot"]])["chrf"][0]
    assert 0 < partial < 100


def test_reply_quality_scores_each_path_against_its_alternatives():
    decisions = [
        _decision("answer", "I am a robot", "I am a robot"),
        _decision("generator", "wrong stored answer", None),
        _decision("handoff", "I like tea", HANDOFF),
    ]
    references = [["I am a robot"], ["It is sunny today"], ["I like tea"]]
    generated = ["no idea", "It is sunny today", "I am a robot"]
    quality = reply_quality(decisions, references, HANDOFF, generated)
    assert {g: q["questions"] for g, q in quality.items()} == {
        "all": 3,
        "answer": 1,
        "generator": 1,
        "handoff": 1,
    }
    assert quality["answer"]["sent"]["exact"] == quality["answer"]["best_stored"]["exact"] == 1.0
    assert quality["answer"]["generator"]["exact"] == 0.0  # the generator's reply to question 0 is wrong
    assert quality["generator"]["sent"] == quality["generator"]["generator"] == {"chrf": 100.0, "exact": 1.0}
    assert quality["generator"]["best_stored"]["exact"] == 0.0
    assert quality["handoff"]["sent"] == quality["handoff"]["handoff"]
    assert quality["handoff"]["best_stored"]["exact"] == 1.0  # a right stored answer below the thresholds
    assert quality["all"]["sent"]["exact"] == pytest.approx(2 / 3)


def test_reply_quality_without_a_generator_leaves_empty_paths_empty():
    decisions = [_decision("handoff", "I like tea", HANDOFF)]
    quality = reply_quality(decisions, [["I like tea"]], HANDOFF, None)
    assert "generator" not in quality["all"]
    assert quality["answer"] == {
        "questions": 0,
        "sent": {"chrf": None, "exact": None},
        "best_stored": {"chrf": None, "exact": None},
        "handoff": {"chrf": None, "exact": None},
    }
    with pytest.raises(ValueError, match="generated replies are needed"):
        reply_quality([_decision("generator", "x", None)], [["y"]], HANDOFF, None)
