"""Assistant settings files (``*_app.yaml``): the shipped ones validate, a bad key is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.apps.assistant import load_settings
from tunelab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "settings",
    sorted((ROOT / "examples" / "apps" / "customer_service").glob("*_app.yaml")),
    ids=lambda p: p.name,
)
def test_shipped_assistant_settings_validate(settings: Path):
    assert load_settings(settings).top_k >= 1


def test_unknown_key_is_named_with_the_valid_ones(tmp_path: Path):
    path = tmp_path / "a_app.yaml"
    path.write_text("intent_run: i\nanswers_run: a\nmin_score: 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"min_score: unknown key; allowed keys: .*min_answer_score"):
        load_settings(path)


def test_every_bad_value_is_reported_at_once(tmp_path: Path):
    path = tmp_path / "a_app.yaml"
    path.write_text("answers_run: a\nmin_intent_confidence: 1.5\ntop_k: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "intent_run: required key is missing" in message
    assert "min_intent_confidence: Input should be less than or equal to 1" in message
    assert "top_k: Input should be greater than or equal to 1" in message


def test_duplicate_key_is_refused(tmp_path: Path):
    path = tmp_path / "a_app.yaml"
    path.write_text("intent_run: i\nanswers_run: a\nanswers_run: b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)
