"""train.auto_batch_size: the largest micro-batch that fits; accumulation keeps the asked effective batch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from tunelab.config import dump_config
from tunelab.errors import ConfigError
from tunelab.training import build_accelerator, prepare_inputs, resolve
from tunelab.training.auto_batch import (
    MiB,
    auto_batch_size,
    available_bytes,
    estimator,
    fit_trial,
    resumed_micro_batch,
    step_trial,
    with_micro_batch,
)
from tunelab.workflows import train_run

OOM = "CUDA out of memory. Tried to allocate 64.00 MiB"  # the allocator's message, as torch raises it


def _prepared(make_config, model=None, **train):
    plan = resolve(make_config(model=model or {}, train={"auto_batch_size": True, **train}))
    return plan, prepare_inputs(plan), build_accelerator(plan.cfg.train)


def test_budget_for_micro_batch_8_of_32_trains_like_batch_32(
    make_config, tiny_backbone_no_dropout_dir: Path, tmp_path: Path, caplog
):
    """Budget between the estimates of 8 and 16 rows: 8 x 4, and the same step losses as one batch of 32."""
    model = {"name_or_path": str(tiny_backbone_no_dropout_dir)}
    common = {"batch_size": 32, "group_by_length": False, "max_steps": 3, "warmup_steps": 0}
    plan, inputs, accelerator = _prepared(make_config, model, **common)
    estimate = estimator(plan, inputs, accelerator)
    assert estimate(8).total < estimate(16).total
    limit = (estimate(8).total + estimate(16).total) / 2 / MiB

    def run(name: str, **train) -> dict[int, float]:
        cfg = make_config(model=model, train={**common, "output_dir": str(tmp_path / name), **train})
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump_config(cfg))
        return train_run(path).losses

    with caplog.at_level(logging.INFO, logger="tunelab"):
        auto = run("auto", auto_batch_size=True, memory_limit_mb=limit)
    plain = run("plain")
    chosen = [r.getMessage() for r in caplog.records if "auto_batch_size" in r.getMessage()]
    assert len(chosen) == 1
    assert "micro-batch 8 x accumulation 4 = effective batch 32" in chosen[0]
    recorded = yaml.safe_load((tmp_path / "auto" / "run_config.yaml").read_text())["train"]
    assert (recorded["batch_size"], recorded["gradient_accumulation_steps"]) == (8, 4)
    assert sorted(auto) == sorted(plain) == [1, 2, 3]
    for step, loss in plain.items():
        assert auto[step] == pytest.approx(loss, abs=1e-5)
    # a resume takes 8 x 4 from its checkpoint: the config as written (32 x 1) would be refused
    train_run(tmp_path / "auto.yaml", resume=True)


def test_out_of_memory_trials_settle_on_the_largest_divisor_that_runs(make_config):
    """Requested 6 x 4 = 24; trials above 5 rows raise torch's OOM: 24, 12, 8, 6 fail, 4 x 6 is kept.

    The trial is the run's own step (MoE's here, which counts routed tokens into buffers for the
    first optimizer step); it leaves weights, gradients and those buffers as they were.
    """
    moe = {"name": "moe", "params": {"n_routed_experts": 4, "top_k": 2}}
    plan = resolve(make_config(methods=[moe], train={"batch_size": 6, "gradient_accumulation_steps": 4}))
    inputs, accelerator = prepare_inputs(plan), build_accelerator(plan.cfg.train)
    model = inputs.adapted.model
    before = {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}
    real = step_trial(plan, inputs, accelerator)
    tried, ran = [], []

    def trial(micro: int) -> None:
        tried.append(micro)
        if micro > 5:
            raise torch.OutOfMemoryError(OOM)
        real(micro)
        ran.append(micro)

    micro = fit_trial(24, trial)
    assert (micro, tried, ran) == (4, [24, 12, 8, 6, 4], [4])
    train = with_micro_batch(plan, micro).cfg.train
    assert (train.batch_size, train.gradient_accumulation_steps) == (4, 6)
    assert all(p.grad is None for p in model.parameters())
    assert any("step_counts" in n for n, _ in model.named_buffers())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.equal(tensor, before[name]), name


def test_out_of_memory_at_micro_batch_1_names_the_key_and_other_errors_pass():
    def oom(micro: int) -> None:
        raise torch.OutOfMemoryError(OOM)

    with pytest.raises(
        ConfigError, match=r"train\.auto_batch_size: micro-batch 1 .* runs out of device memory"
    ):
        fit_trial(6, oom)

    def broken(micro: int) -> None:
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        fit_trial(6, broken)


def test_budget_below_micro_batch_1_is_an_error_naming_the_key(make_config):
    plan, inputs, accelerator = _prepared(make_config, memory_limit_mb=0.01)
    with pytest.raises(ConfigError, match=r"train\.memory_limit_mb: micro-batch 1 of \d+ tokens needs"):
        auto_batch_size(plan, inputs, accelerator)


def test_memory_limit_without_auto_batch_size_is_refused(make_config):
    with pytest.raises(ConfigError, match="memory_limit_mb is read only by auto_batch_size"):
        make_config(train={"memory_limit_mb": 512})


def test_resume_keeps_the_checkpoint_micro_batch_only_for_the_same_effective_batch(make_config):
    plan = resolve(make_config(train={"auto_batch_size": True, "batch_size": 32}))
    kept = resumed_micro_batch(plan, {"train": {"batch_size": 8, "gradient_accumulation_steps": 4}}).cfg.train
    assert (kept.batch_size, kept.gradient_accumulation_steps) == (8, 4)
    other = resumed_micro_batch(plan, {"train": {"batch_size": 8, "gradient_accumulation_steps": 2}})
    assert other.cfg.train.batch_size == 32


def test_available_memory_is_capped_by_the_cgroup_limit(tmp_path: Path):
    """Limit 300 MiB, 100 used of which 40 is inactive page cache: 240 MiB left (if RAM has that much)."""
    (tmp_path / "memory.max").write_text(f"{300 * MiB}\n")
    (tmp_path / "memory.current").write_text(f"{100 * MiB}\n")
    (tmp_path / "memory.stat").write_text(f"anon {60 * MiB}\ninactive_file {40 * MiB}\n")
    assert available_bytes(tmp_path) == min(240 * MiB, available_bytes(tmp_path / "none"))
    (tmp_path / "memory.max").write_text("max\n")
    assert available_bytes(tmp_path) == pytest.approx(available_bytes(tmp_path / "none"), rel=0.05)
