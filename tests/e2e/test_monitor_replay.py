"""The monitor recipe cut for CI: a small sentiment fine-tune, a zero-shot topic run, a short replay.

Measured with these settings on seeds 0, 1, 2: every burst detected, 19 / 30 / 28 items after its first
item, no false alarm; the test replays seed 0 only, to stay short.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOPICS = ["business", "entertainment", "politics", "sports", "tech"]


def _cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.slow
def test_monitor_replay_alerts_on_the_injected_burst_without_false_alarms(tmp_path: Path):
    rt, bbc = tmp_path / "rt", tmp_path / "bbc"
    _cli("data", "prepare", "rotten-tomatoes", rt)
    _cli("data", "prepare", "bbc-news", bbc)
    _cli(
        "train",
        EXAMPLES / "sentiment.yaml",
        f"--data.train_file={rt / 'train.csv'}",
        f"--data.test_file={rt / 'test.csv'}",
        "--data.max_train_samples=1280",
        "--data.max_eval_samples=32",
        "--task.params.max_length=32",
        "--train.lr=2e-4",
        "--train.eval_steps=1000",
        "--train.save_steps=1000",
        f"--train.output_dir={tmp_path / 'sentiment'}",
    )
    # the topic run: MiniLM zero-shot by label descriptions (k_shot 0 trains nothing), still a classifier
    topic = {
        "model": {"name_or_path": "minilm-l6"},
        "data": {"train_file": str(bbc / "train.csv"), "k_shot": 0, "max_eval_samples": 16},
        "task": {
            "name": "embedding_classification",
            "params": {"max_length": 64, "descriptions": {t: f"This news is about {t}." for t in TOPICS}},
        },
        "train": {"output_dir": str(tmp_path / "topic")},
    }
    (tmp_path / "topic.yaml").write_text(yaml.safe_dump(topic), encoding="utf-8")
    _cli("train", tmp_path / "topic.yaml")
    settings = {
        "sentiment_run": str(tmp_path / "sentiment"),
        "topic_run": str(tmp_path / "topic"),
        "window": {
            "baseline": 40,
            "recent": 15,
            "threshold": 0.3,
            "min_recent_items": 8,
            "min_baseline_items": 30,
            "cooldown": 30,
        },
    }
    (tmp_path / "monitor_app.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    out = _cli(
        "apps",
        "monitor-replay",
        tmp_path / "monitor_app.yaml",
        f"--news={bbc / 'test.csv'}",
        f"--negatives={rt / 'test.csv'}",
        "--items=400",
        "--burst-at=250",
        "--burst-size=40",
        "--seed=0",
    )
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["items"] == 400
    assert row["burst"][0] >= 250
    assert row["detected"], row
    assert row["latency_items"] <= 40, row
    assert row["false_alarms"] == 0, row
