"""kill -9 a real training process at random points and resume it each time: it ends as one run ends.

The run is ``python -m tunelab.cli train`` in a subprocess, checkpointing every 2 steps and logging
every 3 (so log windows span checkpoints). Kill points are drawn from a fixed seed: as soon as the run
opens its history (before its first checkpoint), then twice after a random step plus a random delay,
so kills land in steps, evaluations, checkpoint and ``best/`` writes, the final report, or right after
a resume. Each kill is followed by ``train --resume``. Slow: every process start imports torch and
transformers (10 s or more on 2 cores).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tunelab.config import dump_config
from tunelab.training.checkpoint import latest_checkpoint
from tunelab.training.tracking import HISTORY_FILE

pytestmark = pytest.mark.slow

SEED = 16
TOTAL_STEPS = 24  # 2 epochs of 96 rows in batches of 8
WALL_CLOCK = {"train/samples_per_s"}
TIMEOUT = 300.0  # seconds one process may take (2 shared cores)


def write_config(make_config, toy_data: dict[str, Path], path: Path, output_dir: Path) -> Path:
    cfg = make_config(
        data={"test_file": str(toy_data["test"])},
        train={
            "output_dir": str(output_dir),
            "num_train_epochs": 2,
            "save_steps": 2,
            "logging_steps": 3,
            "eval_steps": 4,
            "metric_for_best_model": "loss",  # falls at most evaluations: best/ is rewritten throughout
        },
    )
    path.write_text(dump_config(cfg))
    return path


def start(config: Path, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "tunelab.cli", "train", str(config), *flags],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_ctime_ns


def newest_step(history: Path, stale: tuple[int, int] | None) -> int:
    """The newest step this process logged: -1 while ``history`` is missing or still the killed run's."""
    if _identity(history) in (None, stale):  # a resume rewrites it (new file) before logging
        return -1
    complete = history.read_text().split("\n")[:-1]  # a line cut by a kill has no newline
    return max((json.loads(line)["step"] for line in complete), default=0)


def kill_at(proc: subprocess.Popen[bytes], out: Path, step: int, delay: float) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after it logged ``step`` (0: anything), unless it ends first."""
    history = out / HISTORY_FILE
    stale = _identity(history)
    deadline = time.monotonic() + TIMEOUT
    while newest_step(history, stale) < step and proc.poll() is None:
        assert time.monotonic() < deadline, f"no step {step} logged in {TIMEOUT:.0f}s"
        time.sleep(0.005)
    time.sleep(delay)
    proc.kill()
    proc.wait()


def records(out: Path) -> list[dict[str, float]]:
    lines = (out / HISTORY_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]


def tensorboard_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = [tag for tag in events.Tags()["scalars"] if tag not in WALL_CLOCK]
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


def safetensors(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.safetensors"))}


def test_kill_9_and_resume_ends_exactly_as_one_uninterrupted_run(make_config, toy_data, tmp_path: Path):
    reference_out, out, log = tmp_path / "reference", tmp_path / "killed", tmp_path / "train.log"
    reference = start(
        write_config(make_config, toy_data, tmp_path / "reference.yaml", reference_out), tmp_path / "ref.log"
    )
    config = write_config(make_config, toy_data, tmp_path / "killed.yaml", out)
    rng = random.Random(SEED)
    kill_steps = [0, *sorted(rng.sample(range(3, TOTAL_STEPS), 2))]

    kills = 0
    for i, step in enumerate(kill_steps):
        proc = start(config, log, *(["--resume"] if i else []))
        kill_at(proc, out, step, delay=rng.uniform(0.0, 0.3))
        if proc.returncode == 0:  # it finished before the kill point
            break
        assert proc.returncode == -9, log.read_text()[-3000:]
        kills += 1
    else:
        assert start(config, log, "--resume").wait(TIMEOUT) == 0, log.read_text()[-3000:]
    assert reference.wait(TIMEOUT) == 0, (tmp_path / "ref.log").read_text()[-3000:]

    assert kills >= 2
    checkpoint, reference_checkpoint = latest_checkpoint(out), latest_checkpoint(reference_out)
    assert checkpoint is not None
    assert reference_checkpoint is not None
    assert checkpoint.name == reference_checkpoint.name == f"step-{TOTAL_STEPS:06d}"
    assert safetensors(checkpoint) == safetensors(reference_checkpoint)
    assert safetensors(out / "best") == safetensors(reference_out / "best")
    assert safetensors(out / "best")  # the comparison saw weights

    expected = records(reference_out)
    logged = [r["step"] for r in expected if "train/loss" in r]
    assert logged == list(range(3, TOTAL_STEPS + 1, 3))
    assert records(out) == expected  # every record, each step once, loss and lr included
    assert tensorboard_scalars(out) == tensorboard_scalars(reference_out)
    report = json.loads((out / "best" / "metrics.json").read_text())
    assert report == json.loads((reference_out / "best" / "metrics.json").read_text())
