"""Training: plan resolution, the loop, checkpoints and tracking."""

from __future__ import annotations

import importlib.util
import logging
import os
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from tunelab.config import DistributedConfig, TrainConfig
from tunelab.errors import ConfigError
from tunelab.models.run_info import cpu_has_native_bf16, cpu_info
from tunelab.training.loop import StopFlag, TrainResult, train
from tunelab.training.plan import Plan, resolve
from tunelab.training.setup import TrainInputs, prepare_inputs

__all__ = [
    "Plan",
    "StopFlag",
    "TrainInputs",
    "TrainResult",
    "build_accelerator",
    "check_strategy",
    "prepare_inputs",
    "report_accelerator",
    "resolve",
    "train",
]

logger = logging.getLogger(__name__)


def resolve_precision(requested: str) -> str:
    """Map ``train.precision`` to accelerate's mixed_precision, refusing what the device cannot do.

    ``auto`` on a CPU is bf16 autocast where the CPU has native bf16: there MiniLM trained BBC News
    (length 128) at 1.33x fp32's samples/s and Rotten Tomatoes (length 64) at 1.42x, with the same
    test metrics (bench/RESULTS.md, "CPU bf16", "Training"); fp32 elsewhere, where bf16 would be
    ~100x slower.
    """
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if not cuda:
            return "bf16" if cpu_has_native_bf16() else "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp32":
        return "no"
    if requested == "fp16" and not cuda:
        raise ConfigError("train.precision: fp16 autocast needs a CUDA GPU; use fp32 or auto on this machine")
    if requested == "bf16" and not cuda and not cpu_has_native_bf16():
        raise ConfigError(
            "train.precision: this CPU has no native bf16 (avx512_bf16/amx_bf16), bf16 would run far slower "
            "than fp32; use fp32 or auto"
        )
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU does not support bf16; use fp16 or auto")
    return requested


def check_strategy(cfg: DistributedConfig) -> None:
    """Refuse a sharding strategy this machine cannot run, before any process starts or weight loads.

    Found with accelerate 1.16 and torch 2.13 on CPU (gloo): accelerate enables FSDP and DeepSpeed only
    on GPU-like devices; with ``cpu=True`` it ignores either plugin and wraps the model in DDP, so the
    run would silently not shard. DeepSpeed 0.19.8 installed, but without ``cpu=True`` both workers
    hung in ``Accelerator()`` for minutes, so it is not wired in (README, "several processes").
    """
    if cfg.strategy == "fsdp" and not torch.cuda.is_available():
        raise ConfigError(
            "train.distributed.strategy: fsdp needs CUDA GPUs; on CPU accelerate ignores the FSDP plugin "
            "and the model would not be sharded; use ddp"
        )
    if cfg.strategy == "deepspeed":
        installed = importlib.util.find_spec("deepspeed") is not None
        raise ConfigError(
            f"train.distributed.strategy: deepspeed is {'installed' if installed else 'not installed'}, but "
            "tunelab runs it nowhere yet (it needs CUDA GPUs and could not be tested here); use ddp, or "
            "fsdp on CUDA GPUs"
        )


def _plugins(cfg: DistributedConfig) -> dict[str, Any]:
    """The ``Accelerator`` kwargs of ``cfg.strategy``: accelerate's sharding plugin (none for ddp)."""
    if cfg.strategy == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        return {"fsdp_plugin": FullyShardedDataParallelPlugin(fsdp_version=2)}
    return {}


def build_accelerator(cfg: TrainConfig) -> Accelerator:
    """An Accelerator for this machine; works unchanged under torchrun/accelerate launch (gloo or NCCL).

    The scheduler is stepped once per optimizer step by our loop; accelerate's default would step it
    once per process, which assumes a schedule sized for the single-process data length. Several
    processes without CUDA must be asked for explicitly (``cpu=True``), or accelerate leaves each
    process alone instead of joining them over gloo. ``train.distributed.timeout_s`` bounds every
    collective, so a rank whose peer died fails instead of waiting forever.
    """
    check_strategy(cfg.distributed)
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.distributed.timeout_s))
    return Accelerator(
        mixed_precision=resolve_precision(cfg.precision),
        step_scheduler_with_optimizer=False,
        cpu=multi_cpu,
        kwargs_handlers=[timeout],
        **_plugins(cfg.distributed),
    )


def report_accelerator(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """One log line: device, processes, the precision chosen and why (called once logging is set up)."""
    logger.info(
        "device %s, %d process(es), mixed precision %s (train.precision %s; CPU %s, native bf16 %s)",
        accelerator.device,
        accelerator.num_processes,
        accelerator.mixed_precision,
        cfg.precision,
        cpu_info()["cpu"],
        "yes" if cpu_has_native_bf16() else "no",
    )
