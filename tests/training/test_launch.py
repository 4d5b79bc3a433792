"""``tunelab train --nproc``: torch's elastic launcher, failed ranks, elastic restarts, process counts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from toy_tasks import toy_rows, write_csv
from tunelab.cli import app
from tunelab.errors import ConfigError
from tunelab.models.run_info import read_run_info
from tunelab.training.checkpoint import config_differences

FAULT_HOOK = Path(__file__).with_name("fault_hook")


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_no_dropout_dir: Path) -> dict:
    """12 optimizer steps at a global batch of 8 (2 processes x 4), a checkpoint every 4 steps; batches
    grouped by length (the default), so another process count must cut the same global batches."""
    tmp = tmp_path_factory.mktemp("launch")
    return {
        "model": {"name_or_path": str(tiny_backbone_no_dropout_dir)},
        "data": {
            "train_file": str(write_csv(tmp / "train.csv", toy_rows(96, seed=2))),
            "dev_file": str(write_csv(tmp / "dev.csv", toy_rows(32, seed=3))),
        },
        "task": {"params": {"max_length": 32}},
        "train": {
            "max_steps": 12,
            "batch_size": 4,
            "lr": 1e-3,
            "logging_steps": 1,
            "save_steps": 4,
            "save_total_limit": 3,
            "seed": 3,
            "distributed": {"timeout_s": 60},
        },
    }


def _train(
    out: Path, raw: dict, *args: str, fault: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``tunelab train`` on ``raw`` with its output in ``out/run``; ``fault="RANK:STEP:kill|hang"`` arms
    ``fault_hook/sitecustomize.py``."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "output_dir": str(out / "run")}}))
    path = os.pathsep.join([str(FAULT_HOOK), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "1000"}  # rich wraps log lines at COLUMNS
    if fault is not None:
        env["TUNELAB_TEST_FAULT"] = fault
    cmd = [sys.executable, "-m", "tunelab.cli", "train", str(cfg), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}


def _workers_of(cfg: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``cfg`` (the launcher and its workers)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if str(cfg) in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, base_config: dict) -> Path:
    """The reference: 2 processes through ``--nproc 2``, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    done = _train(out, base_config, "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "run"


@pytest.mark.slow
def test_killed_rank_ends_the_launch_with_its_name(tmp_path: Path, base_config: dict):
    """Rank 1 SIGKILLs itself after step 2: the launch fails fast, names it, and leaves no worker behind."""
    start = time.monotonic()
    done = _train(tmp_path, base_config, "--nproc", "2", fault="1:2:kill")
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stderr[-3000:]
    assert elapsed < 90
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 (pid "), last
    assert "was killed by SIGKILL" in last
    assert _workers_of(tmp_path / "cfg.yaml") == []


@pytest.mark.slow
def test_a_hung_rank_times_out_instead_of_hanging_the_launch(tmp_path: Path, base_config: dict):
    """Rank 1 stops answering after step 2: rank 0's next collective fails after train.distributed.timeout_s
    and the launch ends, naming it."""
    raw = {**base_config, "train": {**base_config["train"], "distributed": {"timeout_s": 3}}}
    done = _train(tmp_path, raw, "--nproc", "2", fault="1:2:hang")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Timed out waiting 3000ms" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: rank 0 (pid "), done.stderr[-1000:]
    assert _workers_of(tmp_path / "cfg.yaml") == []


@pytest.mark.slow
def test_interrupting_the_launcher_checkpoints_every_rank(tmp_path: Path, base_config: dict):
    """SIGINT to the launcher alone (as a supervisor would send it): torchelastic forwards it, the ranks
    stop together at a step boundary with a checkpoint, and the launch exits 130."""
    raw = {**base_config, "train": {**base_config["train"], "max_steps": 2000, "save_steps": 1000}}
    out = tmp_path / "cfg.yaml"
    out.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "output_dir": str(tmp_path / "run")}}))
    cmd = [sys.executable, "-m", "tunelab.cli", "train", str(out), "--nproc", "2"]
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) as launcher:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        launcher.send_signal(signal.SIGINT)
        _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, stderr[-3000:]
    assert "interrupted by signal 2; continue with --resume" in stderr
    (checkpoint,) = (tmp_path / "run" / "checkpoints").iterdir()
    assert 0 < json.loads((checkpoint / "trainer_state.json").read_text())["step"] < 1000
    assert _workers_of(out) == []


@pytest.mark.slow
def test_elastic_restart_resumes_from_the_checkpoint(tmp_path: Path, base_config: dict, uninterrupted: Path):
    """Rank 1 dies after step 6 (checkpoint at 4): the restarted group resumes at 4 and trains like the
    uninterrupted run from there."""
    done = _train(tmp_path, base_config, "--nproc", "2", "--max-restarts", "1", fault="1:6:kill")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"resumed from \S+step-000004 at step 4 ", done.stderr), done.stderr[-3000:]
    resumed, reference = _losses(tmp_path / "run"), _losses(uninterrupted)
    assert sorted(resumed) == sorted(reference) == list(range(1, 13))
    for step in range(5, 13):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), step


@pytest.mark.slow
def test_verify_re_runs_a_two_process_run_in_two_processes(uninterrupted: Path):
    """The record keeps the process count; verify launches as many workers and reproduces the weights
    bit for bit (one process would draw other batches per rank and report 'differs')."""
    info = read_run_info(uninterrupted / "best")
    assert info is not None
    assert info.processes == 2
    cmd = [sys.executable, "-m", "tunelab.cli", "verify", str(uninterrupted)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "2 process(es)" in done.stderr, done.stderr[-3000:]
    assert "bitwise" in done.stdout, done.stdout


@pytest.mark.slow
def test_a_checkpoint_resumes_under_another_process_count_at_the_same_global_batch(
    tmp_path: Path, base_config: dict, uninterrupted: Path
):
    """The step-4 checkpoint of 2 processes x batch 4 continues in 1 process x batch 8; that run's step-8
    checkpoint continues in 2 processes again: every step equals the uninterrupted 2-process run's."""
    one = tmp_path / "one"
    step4 = uninterrupted / "checkpoints" / "step-000004"
    done = _train(one, base_config, "--resume-from", str(step4), "--train.batch_size", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "saved by 2 process(es), resumed by 1" in done.stderr
    step8 = one / "run" / "checkpoints" / "step-000008"
    done = _train(tmp_path / "two", base_config, "--resume-from", str(step8), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "saved by 1 process(es), resumed by 2" in done.stderr
    reference = _losses(uninterrupted)
    for resumed, steps in (
        (_losses(one / "run"), range(5, 13)),
        (_losses(tmp_path / "two" / "run"), range(9, 13)),
    ):
        assert sorted(resumed) == list(steps)
        for step in steps:
            assert resumed[step] == pytest.approx(reference[step], abs=1e-5), step


def test_batch_size_may_change_only_with_the_process_count_at_the_same_global_batch():
    saved = {"train": {"batch_size": 4, "lr": 1e-3}}
    doubled = {"train": {"batch_size": 8, "lr": 1e-3}}
    assert config_differences(saved, doubled, (2, 1)) == []
    assert config_differences(doubled, saved, (1, 2)) == []
    assert config_differences(saved, doubled, (1, 1)) == ["train.batch_size"]
    assert config_differences(saved, doubled, (None, 1)) == ["train.batch_size"]  # unknown writer count
    assert config_differences(saved, {"train": {"batch_size": 8, "lr": 1e-2}}, (2, 1)) == ["train.lr"]


@pytest.mark.parametrize(
    ("distributed", "message"),
    [
        ({"strategy": "fsdp"}, "fsdp needs CUDA GPUs; on CPU accelerate ignores the FSDP plugin"),
        ({"strategy": "deepspeed", "zero_stage": 3}, "deepspeed is not installed"),
    ],
)
def test_sharding_strategies_this_machine_cannot_run_are_refused_before_launching(
    tmp_path: Path, base_config: dict, distributed: dict, message: str
):
    cfg = tmp_path / "cfg.yaml"
    train = {**base_config["train"], "distributed": distributed, "output_dir": str(tmp_path / "run")}
    cfg.write_text(yaml.safe_dump({**base_config, "train": train}))
    result = CliRunner().invoke(app, ["train", str(cfg), "--nproc", "2"])
    assert result.exit_code == 2
    assert f"error: train.distributed.strategy: {message}" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "distributed", [{"strategy": "deepspeed"}, {"strategy": "ddp", "zero_stage": 2}, {"timeout_s": 0}]
)
def test_distributed_config_is_validated(make_config, distributed: dict):
    with pytest.raises(ConfigError, match=r"train\.distributed"):
        make_config(train={"distributed": distributed})


def test_max_restarts_needs_nproc(tmp_path: Path):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.yaml"), "--max-restarts", "1"])
    assert result.exit_code == 2
    assert "--max-restarts: only with --nproc" in result.output
