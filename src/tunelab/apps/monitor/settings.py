"""Monitor settings (``examples/apps/monitor/monitor_app.yaml``): models, batching, the alert rule, webhook.

An app settings file, not a run config: it names two saved classification runs and says how the stream
is batched and when a topic's negative share has jumped far enough to alert.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from tunelab.apps.settings import load_app_settings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSettings(_Section):
    """Per-topic rolling windows: the recent window is compared with the baseline window before it."""

    unit: Literal["items", "seconds"] = Field(
        default="items",
        description="What window sizes and the cooldown count: the topic's items, or seconds of the "
        "items' 'time' field (arrival time when a record has none).",
    )
    baseline: float = Field(default=90, gt=0, description="Baseline window size (items or seconds).")
    recent: float = Field(default=30, gt=0, description="Recent window size (items or seconds).")
    threshold: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Alert when the recent negative share minus the baseline share reaches this.",
    )
    min_recent_items: int = Field(
        default=10, ge=1, description="Items the recent window must hold before the topic can alert."
    )
    min_baseline_items: int = Field(
        default=60,
        ge=1,
        description="Items the baseline window must hold before the topic can alert: a short baseline "
        "is a noisy reference, so a topic stays quiet while it warms up.",
    )
    cooldown: float = Field(
        default=40,
        ge=0,
        description="After an alert, the topic stays silent for this many items or seconds.",
    )


class WebhookSettings(_Section):
    """Where alerts are POSTed as JSON; a failing webhook is logged and never stops the stream."""

    url: AnyHttpUrl | None = Field(default=None, description="http(s) URL to POST each alert to; none: off.")
    timeout_seconds: float = Field(default=2.0, gt=0, description="Per attempt.")
    retries: int = Field(default=2, ge=0, description="Attempts after the first failed one.")
    backoff_seconds: float = Field(default=0.5, ge=0, description="Wait before retry k: backoff * 2**k.")


class MonitorSettings(_Section):
    """Everything ``tunelab monitor`` needs besides its input."""

    sentiment_run: Path = Field(description="Saved classification run (or model dir) giving sentiment.")
    topic_run: Path = Field(description="Saved classification run (or model dir) giving the topic.")
    negative_label: str = Field(
        default="negative", description="The sentiment run's label that counts as negative."
    )
    batch_size: int = Field(default=32, ge=1, description="Texts classified per batch.")
    max_wait_seconds: float = Field(
        default=0.5, gt=0, description="A partial batch is classified after waiting this long."
    )
    window: WindowSettings = Field(default_factory=WindowSettings, description="The alert rule.")
    webhook: WebhookSettings = Field(default_factory=WebhookSettings, description="Alert webhook.")
    bad_lines: Literal["skip", "fail"] = Field(
        default="skip",
        description="An input line that is not a JSON object with a string 'text': skip it (logged "
        "with file:line) or stop with that error.",
    )
    poll_seconds: float = Field(
        default=0.2, gt=0, description="--follow: how often a file at its end is checked for new lines."
    )

    @model_validator(mode="after")
    def _minimums_fit(self) -> MonitorSettings:
        window = self.window
        if window.unit == "items" and (
            window.min_recent_items > window.recent or window.min_baseline_items > window.baseline
        ):
            raise ValueError("window.min_*_items cannot exceed the window's size in items")
        return self


def load_monitor_settings(path: Path) -> MonitorSettings:
    """Validate a ``*_app.yaml`` monitor settings file; all problems at once, keyed like ``window.recent``."""
    return load_app_settings(path, MonitorSettings, "monitor settings")
