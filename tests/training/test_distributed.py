"""Two CPU processes over gloo (torchrun) train exactly like one process with the same global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp: Path, name: str, raw: dict, nproc: int, *args: str) -> tuple[dict[int, float], list[dict]]:
    out = tmp / name
    out.mkdir(exist_ok=True)
    cfg = out / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "output_dir": str(out / "run")}}))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={_free_port()}",
    ]
    done = subprocess.run(
        [*cmd, str(WORKER), str(cfg), str(out), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    assert all(r["world_size"] == nproc for r in ranks)
    steps = ranks[0]["losses"].keys()
    # Each rank logs the mean loss of its shard; equal shard sizes make the global loss their mean.
    assert all(r["dev"] == ranks[0]["dev"] for r in ranks), "every rank must see the same gathered metrics"
    return {int(s): sum(r["losses"][s] for r in ranks) / nproc for s in steps}, ranks[0]["dev"]


def _one_and_two_processes(tmp: Path, base: dict) -> tuple[list[dict], list[dict]]:
    """Train ``base`` with batch 8 on one process and batch 4 on each of two; the per-step global losses
    must agree. Returns both runs' dev metrics."""
    single, single_dev = _run(tmp, "one", {**base, "train": {**base["train"], "batch_size": 8}}, nproc=1)
    double, double_dev = _run(tmp, "two", {**base, "train": {**base["train"], "batch_size": 4}}, nproc=2)
    assert sorted(single) == sorted(double) == list(range(1, 13))
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=1e-5), step
    return single_dev, double_dev


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path, tiny_backbone_no_dropout_dir: Path, toy_data):
    model = tiny_backbone_no_dropout_dir
    base = {
        "model": {"name_or_path": str(model)},
        "data": {"train_file": str(toy_data["train"]), "dev_file": str(toy_data["dev"])},
        "task": {"params": {"max_length": 32}},
        "train": {"num_train_epochs": 1, "lr": 1e-3, "logging_steps": 1, "group_by_length": False, "seed": 3},
    }
    single_dev, double_dev = _one_and_two_processes(tmp_path, base)
    # 32 dev rows in batches of 12: ranks evaluate unequal batch counts; gathering must keep every row once.
    assert double_dev[-1]["n_examples"] == single_dev[-1]["n_examples"] == 32
    assert double_dev[-1]["confusion_matrix"] == single_dev[-1]["confusion_matrix"]
    assert double_dev[-1]["loss"] == pytest.approx(single_dev[-1]["loss"], abs=1e-4)


@pytest.mark.slow
def test_moe_bias_update_sees_the_global_batch(tmp_path: Path, tiny_backbone_no_dropout_dir: Path, toy_data):
    """Two ranks with the aux-free bias train like one process: counts are summed over ranks before the
    sign update (a rank-local update would route differently), and DDP accepts experts without tokens."""
    model = tiny_backbone_no_dropout_dir
    moe = {
        "n_shared_experts": 0,
        "n_routed_experts": 4,
        "top_k": 1,
        "init": "copy",
        "router_init_std": 0.5,
        "aux_loss_alpha": 0.0,
        "bias_update_speed": 0.05,
        "bias_freeze_fraction": 0.0,
    }
    base = {
        "model": {"name_or_path": str(model)},
        "data": {"train_file": str(toy_data["train"]), "dev_file": str(toy_data["dev"])},
        "task": {"params": {"max_length": 32}},
        "methods": [{"name": "moe", "params": moe}],
        "train": {"num_train_epochs": 1, "lr": 1e-3, "logging_steps": 1, "group_by_length": False, "seed": 3},
    }
    _one_and_two_processes(tmp_path, base)


@pytest.mark.slow
def test_two_processes_train_and_gather_ragged_tokens_like_one(
    tmp_path: Path, tiny_backbone_no_dropout_dir: Path
):
    """NER: ranks hold different numbers of labelled tokens, yet two ranks take the same steps as one
    process (each micro-batch is weighted by its share of the global token count), and the ragged
    dev logits gathered from both ranks give the same metrics."""
    from toy_tasks import token_classification

    model = tiny_backbone_no_dropout_dir
    sections = token_classification(tmp_path)
    base = {
        "model": {"name_or_path": str(model)},
        **sections,
        "train": {
            "num_train_epochs": 2,
            "max_steps": 12,
            "lr": 1e-3,
            "logging_steps": 1,
            "group_by_length": False,
            "seed": 3,
        },
    }
    single_dev, double_dev = _one_and_two_processes(tmp_path, base)
    assert single_dev[-1]["loss"] != pytest.approx(single_dev[0]["loss"], abs=1e-3), "training must move"
    assert double_dev[-1]["n_examples"] == single_dev[-1]["n_examples"] == 16
    assert double_dev[-1]["loss"] == pytest.approx(single_dev[-1]["loss"], abs=1e-4)
    assert double_dev[-1]["f1"] == pytest.approx(single_dev[-1]["f1"], abs=1e-6)


@pytest.mark.slow
def test_two_processes_resume_a_log_window_that_spans_the_checkpoint(
    tmp_path: Path, tiny_backbone_no_dropout_dir: Path, toy_data
):
    """Stopped at step 4 while logging every 3: each rank's share of the open window is checkpointed, so
    the first log after the resume (step 6, averaging steps 4-6) equals the uninterrupted run's."""
    model = tiny_backbone_no_dropout_dir
    base = {
        "model": {"name_or_path": str(model)},
        "data": {"train_file": str(toy_data["train"]), "dev_file": str(toy_data["dev"])},
        "task": {"params": {"max_length": 32}},
        "train": {
            "max_steps": 9,
            "batch_size": 4,
            "lr": 1e-3,
            "logging_steps": 3,
            "eval_steps": 1,
            "group_by_length": False,
            "seed": 3,
        },
    }
    full, _ = _run(tmp_path, "full", base, 2)
    stopped, _ = _run(tmp_path, "stopped", base, 2, "4")
    assert sorted(stopped) == [3]
    resumed, _ = _run(tmp_path, "stopped", base, 2, "0", "resume")
    assert resumed == {6: full[6], 9: full[9]}
