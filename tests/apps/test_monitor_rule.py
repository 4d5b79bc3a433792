"""The monitor's window/alert rule and its settings, without models."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tunelab.apps.monitor.rule import TopicWindow, negative_jump, observe, split_windows
from tunelab.apps.monitor.settings import MonitorSettings, WindowSettings, load_monitor_settings
from tunelab.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "apps" / "monitor" / "monitor_app.yaml"


def _alerts(flags: list[bool], rule: WindowSettings, times: list[float] | None = None) -> list[int]:
    """0-based positions of the items on which one topic's window alerts."""
    window = TopicWindow()
    times = times or [float(i) for i in range(len(flags))]
    return [i for i, (neg, t) in enumerate(zip(flags, times, strict=True)) if observe(window, neg, t, rule)]


def test_rule_alerts_on_the_first_item_that_makes_the_jump():
    rule = WindowSettings(
        baseline=10, recent=5, threshold=0.5, min_recent_items=5, min_baseline_items=5, cooldown=100
    )
    flags = [False] * 10 + [True] * 5
    # at item 12 the recent window (items 8-12) holds 3 negatives of 5 against 0 of the 8 before it:
    # a jump of 0.6; at item 11 it is 2 of 5, a jump of 0.4, below the threshold
    assert _alerts(flags, rule) == [12]


def test_rule_windows_are_the_recent_items_and_the_baseline_before_them():
    rule = WindowSettings(baseline=3, recent=2, threshold=0.5, min_recent_items=1, min_baseline_items=1)
    window = TopicWindow()
    for neg in [True, False, False, True, False, True]:
        observe(window, neg, 0.0, rule)
    baseline, recent = split_windows(window.points, float(window.count), rule)
    assert (baseline, recent) == ([False, False, True], [False, True])  # items 2-4, items 5-6
    assert len(window.points) == 5  # the oldest item fell out of both windows


@pytest.mark.parametrize("seed", range(5))
def test_rule_stays_silent_on_steady_noise_and_catches_a_burst_in_it(seed: int):
    rng = random.Random(seed)
    flags = [rng.random() < 0.3 for _ in range(3000)]
    rule = WindowSettings(baseline=90, recent=30, threshold=0.45, min_recent_items=10, min_baseline_items=10)
    assert _alerts(flags, rule) == []
    burst = flags[:2000] + [rng.random() < 0.9 for _ in range(30)] + flags[2000:]
    assert [i - 2000 for i in _alerts(burst, rule)] in ([i] for i in range(5, 30))


def test_rule_cooldown_silences_a_topic_after_an_alert():
    flags = [False] * 20 + [True] * 40
    base = {"baseline": 20, "recent": 10, "threshold": 0.5, "min_recent_items": 5, "min_baseline_items": 5}
    # item 24: 5 of the last 10 negative against none of the 15 before them
    assert _alerts(flags, WindowSettings(**base, cooldown=100)) == [24]
    # without a cooldown the persisting burst alerts on every item while the jump holds (the burst
    # then fills the baseline too: at item 40 the jump is 1.0 - 0.55)
    assert _alerts(flags, WindowSettings(**base, cooldown=0)) == list(range(24, 40))
    assert _alerts(flags, WindowSettings(**base, cooldown=8)) == [24, 32]


def test_rule_needs_the_minimum_items_in_each_window():
    rule = WindowSettings(baseline=10, recent=5, threshold=0.5, min_recent_items=4, min_baseline_items=8)
    assert negative_jump([False] * 7, [True] * 5, rule) is None  # baseline too small
    assert negative_jump([False] * 8, [True] * 3, rule) is None  # recent too small
    found = negative_jump([False] * 8, [True] * 4, rule)
    assert found is not None
    assert found.jump == 1.0
    assert negative_jump([False] * 8, [True] * 2 + [False] * 3, rule) is None  # 0.4 < 0.5
    assert negative_jump([True] * 8, [False] * 5, rule) is None  # a fall never alerts


def test_rule_keeps_a_topic_quiet_until_its_baseline_is_long_enough():
    """Early in a stream a short baseline is noise; the baseline minimum holds the alert back."""
    flags = [False] * 3 + [True] * 10
    eager = WindowSettings(baseline=20, recent=5, threshold=0.5, min_recent_items=5, min_baseline_items=3)
    patient = WindowSettings(baseline=20, recent=5, threshold=0.5, min_recent_items=5, min_baseline_items=6)
    assert _alerts(flags, eager) == [7]
    assert _alerts(flags, patient) == [10]  # the 6th baseline item arrives with item 10


def test_rule_in_seconds_uses_item_times():
    rule = WindowSettings(
        unit="seconds",
        baseline=100,
        recent=1.5,
        threshold=0.5,
        min_recent_items=3,
        min_baseline_items=3,
        cooldown=1000,
    )
    # one calm item a second for 100 s, then a gap and a burst of 3 negatives 0.5 s apart
    times = [float(i) for i in range(100)] + [300.0, 300.5, 301.0]
    flags = [False] * 100 + [True] * 3
    # the baseline window (199.5 s, 299.5 s] is empty after the gap: no alert however negative the burst
    assert _alerts(flags, rule, times) == []
    times = [float(i) for i in range(100)] + [100.0, 100.5, 101.0]
    # at 101 s the recent window (99.5 s, 101 s] holds the 3 negatives, the baseline the calm items
    assert _alerts(flags, rule, times) == [102]


def test_settings_example_validates_and_errors_name_their_keys(tmp_path: Path):
    settings = load_monitor_settings(EXAMPLE)
    assert settings.negative_label == "negative"
    assert settings.window.recent < settings.window.baseline
    bad = tmp_path / "bad_app.yaml"
    bad.write_text(
        "sentiment_run: a\ntopic_run: b\nwindow: {recent: 0, colour: red}\nwebhook: {url: 'ftp://x'}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_monitor_settings(bad)
    message = str(err.value)
    for key in ("window.recent", "window.colour: unknown key", "webhook.url"):
        assert key in message, message
    with pytest.raises(ValueError, match=r"window\.min_\*_items cannot exceed"):
        MonitorSettings(sentiment_run=Path("a"), topic_run=Path("b"), window=WindowSettings(recent=5))
