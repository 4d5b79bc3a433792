"""The alert rule: per topic, the negative share of a recent window against the baseline window before it.

Pure state and functions, no models: ``observe`` takes one classified item and answers whether the
topic alerts now. A jump (recent share minus baseline share) at or above the threshold alerts once both
windows hold their minimum of items (a short baseline is a noisy reference: the minimum keeps a
topic quiet while it warms up); a topic that alerted stays silent for ``cooldown``. Only rises alert: a
share that falls after a burst (the burst now in the baseline) is the stream recovering.

Positions are the topic's own item count (unit ``items``) or the items' times in seconds (unit
``seconds``); in both cases a window is a half-open interval of positions ending at the newest item.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tunelab.apps.monitor.settings import WindowSettings


@dataclass(frozen=True)
class Jump:
    """Negative shares of the two windows when a topic alerts."""

    baseline_share: float
    recent_share: float
    baseline_items: int
    recent_items: int

    @property
    def jump(self) -> float:
        """Recent minus baseline negative share."""
        return self.recent_share - self.baseline_share


@dataclass
class TopicWindow:
    """One topic's recent history: (position, negative) of each item, oldest first, and its last alert."""

    points: deque[tuple[float, bool]] = field(default_factory=deque)
    count: int = 0  # items seen in this topic; the position of unit-"items" windows
    last_alert: float | None = None


def split_windows(
    points: deque[tuple[float, bool]], now: float, rule: WindowSettings
) -> tuple[list[bool], list[bool]]:
    """(baseline, recent) negative flags: recent = positions in (now - recent, now], baseline before it."""
    recent_start = now - rule.recent
    baseline_start = recent_start - rule.baseline
    baseline = [neg for pos, neg in points if baseline_start < pos <= recent_start]
    recent = [neg for pos, neg in points if recent_start < pos <= now]
    return baseline, recent


def negative_jump(baseline: list[bool], recent: list[bool], rule: WindowSettings) -> Jump | None:
    """The two shares when both windows hold their minimum items and the rise reaches the threshold."""
    if len(baseline) < rule.min_baseline_items or len(recent) < rule.min_recent_items:
        return None
    found = Jump(sum(baseline) / len(baseline), sum(recent) / len(recent), len(baseline), len(recent))
    # a small tolerance: 0.7 - 0.4 is 0.29999999999999993 in floating point
    return found if found.jump >= rule.threshold - 1e-9 else None


def observe(window: TopicWindow, negative: bool, time: float, rule: WindowSettings) -> Jump | None:
    """Add one item to ``window`` (mutated) and return the jump if the topic alerts on it.

    ``time`` is the item's time in seconds; it is the position only for unit ``seconds`` (items
    arriving out of order are placed by their time all the same).
    """
    window.count += 1
    now = float(window.count) if rule.unit == "items" else time
    window.points.append((now, negative))
    horizon = now - rule.recent - rule.baseline
    while window.points and window.points[0][0] <= horizon:
        window.points.popleft()
    if window.last_alert is not None and now - window.last_alert < rule.cooldown:
        return None
    found = negative_jump(*split_windows(window.points, now, rule), rule)
    if found is not None:
        window.last_alert = now
    return found
