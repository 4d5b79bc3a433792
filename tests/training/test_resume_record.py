"""What a resumed run leaves on disk: its config, one metrics record per step, its logs, its start dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from tunelab import workflows
from tunelab.cli import app
from tunelab.config import RunConfig, dump_config
from tunelab.errors import CheckpointError, TunelabError
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.training.checkpoint import config_differences, latest_checkpoint
from tunelab.training.tracking import HISTORY_FILE
from tunelab.workflows import train_run

WALL_CLOCK = {"train/samples_per_s"}


def run(cfg: RunConfig, evaluate_fn: Callable[[Any], dict[str, float]], resume_from: Path | None = None):
    plan = resolve(cfg)
    accelerator = build_accelerator(cfg.train)
    inputs = prepare_inputs(plan)
    result = train(plan, inputs, accelerator, evaluate=evaluate_fn, resume_from=resume_from)
    return result, inputs.adapted.model


def constant_eval(model: Any) -> dict[str, float]:
    return {"accuracy": 0.5}


class Crash(Exception):
    """Stands in for kill -9: the process stops where it is, nothing is closed or saved."""


def crash_at_eval(n: int) -> Callable[[Any], dict[str, float]]:
    calls = iter(range(1, 10_000))

    def fn(model: Any) -> dict[str, float]:
        if next(calls) == n:
            raise Crash
        return {"accuracy": 0.5}

    return fn


def signal_at_eval(n: int, signum: int = signal.SIGINT) -> Callable[[Any], dict[str, float]]:
    calls = iter(range(1, 10_000))

    def fn(model: Any) -> dict[str, float]:
        if next(calls) == n:
            os.kill(os.getpid(), signum)
        return {"accuracy": 0.5}

    return fn


def history(output_dir: Path) -> list[dict[str, float]]:
    lines = (output_dir / HISTORY_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]


def tensorboard_scalars(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(output_dir / "tb"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag not in WALL_CLOCK
    }


def test_resume_after_a_crash_records_each_step_once(make_config, tmp_path: Path):
    """A run dies after step 5 (checkpoint at 4); the resumed run's history equals the uninterrupted one."""
    sections = {"train": {"max_steps": 8, "save_steps": 2, "eval_steps": 1}}
    full_cfg = make_config(**sections)
    run(full_cfg, constant_eval)

    cfg = make_config(train={**sections["train"], "output_dir": str(tmp_path / "crashed")})
    with pytest.raises(Crash):
        run(cfg, crash_at_eval(6))  # step 6 is logged, its eval dies: records of 5 and 6 are past step 4
    assert latest_checkpoint(cfg.train.output_dir).name == "step-000004"
    # TensorBoard reads event files in name order: the second, then a per-process counter compared as
    # text ("10" < "9"). A real resume is a new process seconds later; here it starts in a later second.
    time.sleep(1.01 - time.time() % 1.0)
    run(cfg, constant_eval, resume_from=latest_checkpoint(cfg.train.output_dir))

    expected = history(full_cfg.train.output_dir)
    assert [r["step"] for r in expected] == [s for s in range(1, 9) for _ in ("train", "eval")]
    assert history(cfg.train.output_dir) == expected
    assert tensorboard_scalars(cfg.train.output_dir) == tensorboard_scalars(full_cfg.train.output_dir)


FGM = [{"name": "adversarial", "params": {"attack": "fgm", "epsilon": 0.5}}]


def test_resumed_log_averages_the_same_steps_as_the_uninterrupted_one(make_config, tmp_path: Path):
    """Logging every 3 steps, stopped at 4: the log at 6 still averages steps 4-6 (loss, method metrics)."""
    sections = {"methods": FGM, "train": {"max_steps": 9, "logging_steps": 3, "eval_steps": 1}}
    full_cfg = make_config(**sections)
    full, _ = run(full_cfg, constant_eval)

    cfg = make_config(**{**sections, "train": {**sections["train"], "output_dir": str(tmp_path / "stopped")}})
    first, _ = run(cfg, signal_at_eval(4))
    assert (first.stopped, first.step) == ("interrupted", 4)
    resumed, _ = run(cfg, constant_eval, resume_from=first.checkpoint)

    assert resumed.losses == {6: full.losses[6], 9: full.losses[9]}
    records = history(cfg.train.output_dir)
    assert records == history(full_cfg.train.output_dir)
    assert [r["train/adv_loss"] for r in records if "train/adv_loss" in r] != []


def test_a_moved_run_resumes(make_config, tmp_path: Path):
    """train.output_dir is where the run lives, not what it computes: a moved run continues exactly."""
    sections = {"train": {"max_steps": 6, "eval_steps": 1}}
    _, full_model = run(make_config(**sections), constant_eval)

    before = make_config(train={**sections["train"], "output_dir": str(tmp_path / "here")})
    first, _ = run(before, signal_at_eval(3))
    shutil.move(tmp_path / "here", tmp_path / "there")
    moved = make_config(train={**sections["train"], "output_dir": str(tmp_path / "there")})
    resumed, resumed_model = run(moved, constant_eval, resume_from=latest_checkpoint(tmp_path / "there"))

    assert resumed.step == 6
    for (name, a), b in zip(
        full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_config_differences_ignore_where_the_run_lives(make_config, tmp_path: Path):
    saved = make_config().model_dump(mode="json")
    moved = make_config(train={"output_dir": str(tmp_path / "elsewhere")}).model_dump(mode="json")
    data_moved = make_config(data={"train_file": str(tmp_path / "other.csv")}).model_dump(mode="json")
    assert config_differences(saved, moved) == []
    assert config_differences(saved, data_moved) == ["data.train_file"]


@pytest.fixture
def config_file(make_config, toy_data: dict[str, Path], tmp_path: Path) -> Path:
    """A finished-in-seconds run as a YAML file, trained through ``train_run`` / the CLI."""
    cfg = make_config(
        data={"test_file": str(toy_data["test"])},
        train={"max_steps": 4, "save_steps": 2, "eval_steps": 2},
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    return path


def test_refused_resume_leaves_the_run_config_alone(config_file: Path, tmp_path: Path):
    train_run(config_file)
    saved = (tmp_path / "run" / "run_config.yaml").read_text()
    with pytest.raises(CheckpointError, match=r"cannot resume, the config changed in: train\.lr"):
        train_run(config_file, ["--train.lr", "1e-4"], resume=True)
    assert (tmp_path / "run" / "run_config.yaml").read_text() == saved


def test_resume_puts_back_what_a_kill_during_a_write_left(config_file: Path, tmp_path: Path):
    """Killed between best/'s two renames, after the step-2 checkpoint: best/ comes back, temps go."""
    train_run(config_file)
    out = tmp_path / "run"
    shutil.rmtree(out / "checkpoints" / "step-000004")
    os.replace(out / "best", out / ".best.old-0123abcd")
    (out / ".best.tmp-4567ef01").mkdir()
    (out / "checkpoints" / ".step-000004.tmp-89abcdef").mkdir()

    result = train_run(config_file, resume=True)

    assert (result.stopped, result.step) == ("completed", 4)
    assert not [p for p in (*out.iterdir(), *(out / "checkpoints").iterdir()) if p.name.startswith(".")]
    assert set(json.loads((out / "best" / "metrics.json").read_text())) == {"dev", "test"}


@pytest.fixture
def signal_raises() -> Iterator[None]:
    """SIGTERM raises, as the default action would end the process, unless tunelab handles it."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("when", ["last step", "final report"])
def test_a_signal_after_the_last_step_still_finishes_the_run(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signal_raises: None, when: str
):
    if when == "last step":  # evaluations at steps 2 and 4: signal during the one at the last step
        calls = iter(range(1, 100))
        real_evaluate = workflows.evaluate

        def evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
            if next(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return real_evaluate(*args, **kwargs)

        monkeypatch.setattr(workflows, "evaluate", evaluate)
    else:
        real_report = workflows.write_report

        def write_report(*args: Any, **kwargs: Any) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            real_report(*args, **kwargs)

        monkeypatch.setattr(workflows, "write_report", write_report)

    result = CliRunner().invoke(app, ["train", str(config_file)])
    assert result.exit_code == 0, result.output
    logged = " ".join(result.output.split())  # rich wraps long lines
    assert "signal 15 arrived after the last step; the finished run ignored it" in logged
    report = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())
    assert set(report) == {"dev", "test"}


def _partial_run(out: Path) -> None:
    """The files of a run killed before its first checkpoint (config, logs, interrupted atomic writes)."""
    (out / "checkpoints" / ".step-000002.tmp").mkdir(parents=True)
    (out / "tb").mkdir()
    (out / ".best.tmp-1a2b3c4d").mkdir()
    (out / "run_config.yaml").write_text("train: {}\n")
    (out / HISTORY_FILE).write_text('{"step": 1, "train/loss": 9.0}\n{"step": 2, "tr')


@pytest.mark.parametrize("resume", [False, True], ids=["train", "train --resume"])
def test_a_run_killed_before_its_first_checkpoint_starts_over(
    config_file: Path, tmp_path: Path, resume: bool
):
    out = tmp_path / "run"
    _partial_run(out)
    result = train_run(config_file, resume=resume)
    assert (result.stopped, result.step) == ("completed", 4)
    assert [r["step"] for r in history(out) if "train/loss" in r] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.iterdir()) == [
        "best",
        "checkpoints",
        HISTORY_FILE,
        "run_config.yaml",
        "tb",
    ]


@pytest.mark.parametrize("resume", [False, True], ids=["train", "train --resume"])
@pytest.mark.parametrize(
    ("extra", "named"),
    [("notes.txt", "notes.txt"), ("best/metrics.json", "best/metrics.json (a finished run)")],
    ids=["foreign file", "finished zero-shot run"],
)
def test_other_files_without_a_checkpoint_need_overwrite(
    config_file: Path, tmp_path: Path, resume: bool, extra: str, named: str
):
    out = tmp_path / "run"
    _partial_run(out)
    (out / extra).parent.mkdir(exist_ok=True)
    (out / extra).write_text("{}")
    message = f"{out} has no checkpoint to resume but holds {named}; pass --overwrite to delete it"
    with pytest.raises(TunelabError, match=re.escape(message)):
        train_run(config_file, resume=resume)
    assert (out / extra).is_file()


def test_a_run_with_a_checkpoint_needs_resume_or_overwrite(config_file: Path, tmp_path: Path):
    (tmp_path / "run" / "checkpoints" / "step-000002").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step-000002" / "trainer_state.json").write_text("{}")
    with pytest.raises(
        TunelabError, match=r"newest checkpoint step-000002\); pass --resume to continue it or --overwrite"
    ):
        train_run(config_file)
