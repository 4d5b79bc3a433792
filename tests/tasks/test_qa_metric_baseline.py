"""SQuAD EM/F1 normalisation (official examples) and the lexical-overlap baseline."""

from __future__ import annotations

import pytest

from tunelab.tasks.qa.baseline import answer
from tunelab.tasks.qa.squad_metric import best_thresholds, f1, normalize_answer, squad_scores


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The Denver Broncos", "denver broncos"),
        ("  an   apple, a day!  ", "apple day"),
        ("Theresa May", "theresa may"),  # 'the' only as a whole word
        ("$1.13bn (£600m)", "113bn £600m"),
    ],
)
def test_normalize_answer_matches_official_rules(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


def test_f1_official_token_overlap() -> None:
    # official script: gold "the cat sat", pred "cat sat down" -> P 2/3, R 2/2 -> F1 0.8
    assert f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert f1("", "") == 1.0
    assert f1("", "something") == 0.0


def test_squad_scores_max_over_golds_and_v2_breakdown() -> None:
    scores = squad_scores(["Denver Broncos", "", "Paris"], [["the Denver Broncos", "Broncos"], [], ["Lyon"]])
    assert scores["exact_match"] == pytest.approx(200 / 3)
    assert scores["HasAns_exact_match"] == pytest.approx(50.0)
    assert scores["NoAns_exact_match"] == pytest.approx(100.0)
    assert scores["HasAns_total"] == 2
    assert scores["NoAns_total"] == 1


def test_baseline_answers_from_the_window_sharing_question_words() -> None:
    context = (
        "Rain is expected over the weekend after a mild week across the country, with sunny spells "
        "in the south and strong winds in the north. The chief executive of the airline, Rod Eddington, "
        "joined it in 2000."
    )
    assert answer("Who is the chief executive of the airline?", context, 12, 4, 0.0) == "Rod Eddington"
    assert answer("Which band won the music award?", context, 12, 4, 0.5) == ""


def test_best_thresholds_match_the_official_search() -> None:
    # q0 answerable, right span, diff -2; q1 unanswerable, diff 1; q2 answerable, wrong span, diff 3
    spans, diffs, golds = ["Paris", "Lyon", "Nice"], [-2.0, 1.0, 3.0], [["Paris"], [], ["Rome"]]
    best = best_thresholds(spans, diffs, golds)
    assert best["best_exact_match"] == pytest.approx(200 / 3)  # answer q0 only: q0 right, q1/q2 "" -> 2/3
    assert best["best_exact_match_thresh"] == -2.0
    all_null = best_thresholds(spans, [None, None, None], golds)
    assert all_null["best_f1"] == pytest.approx(100 / 3)
