"""AdamW with decoupled decay groups and a transformers learning-rate schedule.

Methods shape the groups through ``Adapted.lr_scale`` / ``Adapted.lr_start``: each group carries its
``lr`` (base lr x scale) and a ``start_step`` before which the schedule holds its lr at zero. AdamW
with lr 0 leaves a parameter bit-identical (decay and update are both multiplied by lr).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, cast

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler

from tunelab.config import TrainConfig


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float,
    lr_scale: Mapping[str, float] | None = None,
    lr_start: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One group per (decay, lr scale, start step), in first-seen order.

    Decay matrices only: biases and norm weights (1-D tensors) are not decayed (nanoGPT's rule).
    """
    scale, start = lr_scale or {}, lr_start or {}
    groups: dict[tuple[float, float, int], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = weight_decay if p.ndim >= 2 else 0.0
        key = (decay, scale.get(name, 1.0), start.get(name, 0))
        group = groups.setdefault(
            key, {"params": [], "weight_decay": decay, "lr": lr * key[1], "start_step": key[2]}
        )
        group["params"].append(p)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    cfg: TrainConfig,
    lr_scale: Mapping[str, float] | None = None,
    lr_start: Mapping[str, int] | None = None,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, fused into one kernel per device.

    The fused implementation is ~7x faster than the default on CPU for a 22M-parameter model
    (13 ms vs 97 ms per step, measured), which is ~15% of a MiniLM training step.
    """
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay, cfg.lr, lr_scale, lr_start),
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        fused=True,
    )


def num_warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Warmup from ``warmup_steps`` or ``warmup_ratio`` (exclusive; validated in config)."""
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return math.ceil((cfg.warmup_ratio or 0.0) * total_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup then linear/cosine decay to zero, or constant after warmup.

    Groups with a ``start_step`` get lr 0 until that many optimizer steps are done, then follow the
    same schedule as the others (it is not restarted).
    """
    name = "constant_with_warmup" if cfg.lr_scheduler_type == "constant" else cfg.lr_scheduler_type
    # get_scheduler has no return annotation; every schedule named above is a LambdaLR (see lr_lambdas).
    schedule = cast(
        LambdaLR,
        get_scheduler(
            name,
            optimizer,
            num_warmup_steps=num_warmup_steps(cfg, total_steps),
            num_training_steps=total_steps,
        ),
    )
    starts = [group.get("start_step", 0) for group in optimizer.param_groups]
    if not any(starts):
        return schedule
    base = schedule.lr_lambdas[0]
    return LambdaLR(optimizer, [partial(_held_until, base, start) for start in starts])


def _held_until(schedule: Callable[[int], float], start: int, step: int) -> float:
    """``schedule(step)`` from ``start`` on, zero before."""
    return schedule(step) if step >= start else 0.0
