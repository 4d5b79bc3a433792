"""Console fixtures: a root of run dirs as ``tunelab train`` leaves them, and an example config dir."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunelab.config import RunConfig


def write_run(
    out: Path,
    config: RunConfig,
    steps: int,
    dev_accuracy: float | None,
    expert_load: list[list[float]] | None = None,
) -> Path:
    """A run dir with the files the console reads: run_config.yaml, metrics.jsonl, best/metrics.json."""
    out.mkdir(parents=True)
    (out / "run_config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    lr = config.train.lr
    speed = 40 - 1e4 * lr  # a higher lr learns faster: compared runs show distinct curves
    records: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        records.append(
            {"step": step, "train/loss": 0.7 * math.exp(-step / speed), "train/lr": lr * (1 - step / steps)}
        )
        if step % 5 == 0:
            records.append(
                {
                    "step": step,
                    "eval/loss": 0.6 * math.exp(-step / speed),
                    "eval/accuracy": 0.9 - 0.4 * math.exp(-step / speed),
                }
            )
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if dev_accuracy is not None:
        best: dict[str, Any] = {"dev": {"accuracy": dev_accuracy, "n_examples": 32}}
        if expert_load is not None:
            best["router_dev"] = {"layers": [{"load": row} for row in expert_load]}
        (out / "best").mkdir()
        (out / "best" / "metrics.json").write_text(json.dumps(best))
    return out


@pytest.fixture
def runs_root(tmp_path: Path, make_config: Callable[..., RunConfig]) -> Path:
    """Four runs: full (dev 0.80), LoRA (0.90), MoE (0.85, expert load) and an unfinished nested trial."""
    root = tmp_path / "runs"
    write_run(root / "sent-full", make_config(), 30, 0.80)
    lora = make_config(methods=[{"name": "lora", "params": {"r": 4}}], train={"lr": 1e-3})
    write_run(root / "sent-lora", lora, 30, 0.90)
    moe = make_config(methods=[{"name": "moe"}])
    write_run(
        root / "sent-moe", moe, 30, 0.85, expert_load=[[40.0, 10.0, 30.0, 20.0], [25.0, 25.0, 25.0, 25.0]]
    )
    write_run(root / "sweep" / "trial-0", make_config(train={"lr": 5e-4}), 12, None)
    an_hour_ago = time.time() - 3600  # written long ago: none of these is still training
    for history in root.rglob("metrics.jsonl"):
        os.utime(history, (an_hour_ago, an_hour_ago))
    return root


@pytest.fixture
def examples_dir(
    tmp_path: Path, tiny_backbone_dir: Path, toy_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """One example config, ``toy.yaml``: the tiny BERT on toy data, a run of a few seconds that learns.

    Laid out as a project dir (``tmp_path``, made the current directory, where ``tunelab ui`` runs)
    holds it: the config names ``models/tiny-bert`` and ``data/*.csv`` relative to it, as shipped
    examples do, so the page shows no temp paths. Its
    settings are those the training loop's "loss falls" test uses (lr 2e-3 after 2 warmup steps,
    120 steps): the loss stays near ln 2 for ~50 steps, then falls to ~0.05.
    """
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-bert").symlink_to(tiny_backbone_dir)
    (tmp_path / "data").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "data" / f"{split}.csv").symlink_to(toy_data[split])
    out = tmp_path / "examples"
    out.mkdir()
    config = {
        "model": {"name_or_path": "models/tiny-bert"},
        "data": {"train_file": "data/train.csv", "dev_file": "data/dev.csv"},
        "task": {"name": "classification", "params": {"max_length": 32}},
        "train": {
            "output_dir": "runs/toy",
            "num_train_epochs": 10,
            "batch_size": 8,
            "lr": 2e-3,
            "warmup_steps": 2,
            "logging_steps": 1,
            "eval_steps": 12,
            "save_steps": 1000,
            "seed": 7,
        },
    }
    (out / "toy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out
