"""``train.auto_batch_size``: the largest micro-batch that fits, with the effective batch kept as asked.

The effective batch E = ``batch_size`` x ``gradient_accumulation_steps`` as configured is what the
optimizer sees, and the loop's accumulation is exact (each micro-batch weighted by its share of the
step's targets), so any micro-batch b dividing E, with accumulation E / b, takes the same step. Only
memory and speed depend on b, so the finder picks the largest divisor of E that fits. "Fits" is
decided per device kind:

- CUDA: a real forward + backward (the run's own micro-step, under its autocast) on the b longest
  training rows, the largest micro-batch the data can produce, with the AdamW moments reserved as
  one block since they appear only at the first optimizer step. On out-of-memory accelerate's
  ``find_executable_batch_size`` frees the cache and the next smaller divisor is tried. The CUDA
  allocator fails cleanly, so a trial is the truth, transient buffers and fragmentation included.
- CPU: allocation does not fail cleanly (the kernel overcommits, then swaps or OOM-kills the
  process), so trying is unsafe; ``training.memory``'s estimate for the longest training row is held
  against a budget instead: ``train.memory_limit_mb``, or the loaded weights plus a fraction of the
  memory available (RAM, or what the cgroup limit leaves) shared among the processes.

The choice is written into the run's config (``batch_size``, ``gradient_accumulation_steps``), which
the run records in ``run_config.yaml`` and checkpoints; a resumed run takes it from its checkpoint.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import torch
from accelerate import Accelerator
from accelerate.utils import find_executable_batch_size, send_to_device
from torch.utils.data import DataLoader

from tunelab.config import TrainConfig
from tunelab.data.batching import row_lengths
from tunelab.errors import ConfigError
from tunelab.training.memory import FP32, Estimate, Shape, estimate_model
from tunelab.training.plan import Plan
from tunelab.training.setup import TrainInputs

logger = logging.getLogger(__name__)

MiB = 2**20
# Of the available memory: the estimate is 4-16 % below the measured step (backward's transient
# buffers, README "Memory estimate"), and the allocator's slack and other programs need room too.
AVAILABLE_FRACTION = 0.7
CGROUP = Path("/sys/fs/cgroup")
# (directory, limit, usage, reclaimable page cache key in memory.stat) of cgroup v2 and v1; psutil
# does not see a container's limit.
CGROUP_FILES = (
    ("", "memory.max", "memory.current", "inactive_file"),
    ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
)
LIGHTER = (
    "turn on train.gradient_checkpointing, train fewer parameters (e.g. methods: [{name: lora}]), "
    "or lower the task's max_length"
)


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, largest first: the micro-batches that keep an effective batch of ``n``."""
    return [b for b in range(n, 0, -1) if n % b == 0]


def with_micro_batch(plan: Plan, micro: int) -> Plan:
    """``plan`` training micro-batches of ``micro`` with the accumulation that keeps its effective batch."""
    train = plan.cfg.train
    effective = train.batch_size * train.gradient_accumulation_steps
    assert effective % micro == 0, "a micro-batch divides the effective batch"
    update = {"batch_size": micro, "gradient_accumulation_steps": effective // micro}
    return replace(plan, cfg=plan.cfg.model_copy(update={"train": train.model_copy(update=update)}))


def resumed_micro_batch(plan: Plan, saved: Mapping[str, Any]) -> Plan:
    """``plan`` with the micro-batch its checkpoint's config ``saved`` chose, when the effective batch agrees.

    A resumed run must not search again: the data order is cut in micro-batches, and a CUDA search
    may answer differently on a busier GPU. Otherwise ``plan`` is returned as is, and the resume check
    names the keys that differ.
    """
    train, old = plan.cfg.train, saved.get("train", {})
    micro, steps = old.get("batch_size"), old.get("gradient_accumulation_steps")
    asked = train.batch_size * train.gradient_accumulation_steps
    if not train.auto_batch_size or not isinstance(micro, int) or not isinstance(steps, int):
        return plan
    return with_micro_batch(plan, micro) if micro * steps == asked else plan


def available_bytes(cgroup: Path = CGROUP) -> int:
    """Memory this process can still take: RAM available now, capped by what its cgroup limit leaves.

    The cgroup's usage counts page cache; its inactive part is reclaimed before the limit bites, so
    it is left out, as ``docker stats`` does.
    """
    free = int(psutil.virtual_memory().available)
    for folder, limit_file, usage_file, cache_key in CGROUP_FILES:
        limit, usage, stat = (cgroup / folder / name for name in (limit_file, usage_file, "memory.stat"))
        if limit.is_file() and usage.is_file():
            raw = limit.read_text().strip()
            if raw != "max":  # v2's "no limit"; v1 writes a huge number instead, which min() passes over
                lines = stat.read_text().splitlines() if stat.is_file() else []
                cache = next((int(v) for k, v in (ln.split() for ln in lines) if k == cache_key), 0)
                free = min(free, int(raw) - int(usage.read_text()) + cache)
            break
    return free


def memory_budget(train: TrainConfig, resident: int, processes: int) -> tuple[int, str]:
    """Bytes one process may hold in training, and where the number comes from (for messages).

    ``resident`` (the loaded weights) is no longer in the available memory but is part of what the
    estimate counts, so the default budget adds it back.
    """
    if train.memory_limit_mb is not None:
        return round(train.memory_limit_mb * MiB), "train.memory_limit_mb"
    share = AVAILABLE_FRACTION * available_bytes() / processes
    return resident + round(share), f"weights + {AVAILABLE_FRACTION:.0%} of available memory"


def fit_budget(effective: int, budget: int, estimate: Callable[[int], Estimate]) -> int | None:
    """The largest divisor of ``effective`` whose estimate stays within ``budget`` bytes, else None."""
    return next((b for b in divisors(effective) if estimate(b).total <= budget), None)


def fit_trial(effective: int, trial: Callable[[int], None]) -> int:
    """The largest divisor of ``effective`` for which ``trial(b)`` runs without running out of memory.

    accelerate's ``find_executable_batch_size`` recognises the out-of-memory errors (torch's
    ``OutOfMemoryError`` and the other backends') and clears the device cache between tries; the
    next size is the next smaller divisor, so accumulation still makes the effective batch exact.
    """
    candidates = divisors(effective)

    def next_smaller() -> int:
        tried = candidates.pop(0)
        if not candidates:
            raise ConfigError(
                f"train.auto_batch_size: micro-batch {tried} of the longest training rows runs out of "
                f"device memory; {LIGHTER}"
            )
        return candidates[0]

    def run(micro: int) -> int:
        trial(micro)
        return micro

    largest: Callable[[], int] = find_executable_batch_size(
        run, starting_batch_size=candidates[0], reduce_batch_size_fn=next_smaller
    )
    return largest()


def longest_rows(inputs: TrainInputs) -> list[int]:
    """Training row indices, longest first: the first b make the largest micro-batch of b rows."""
    lengths = row_lengths(inputs.train)
    return sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)


def step_trial(plan: Plan, inputs: TrainInputs, accelerator: Accelerator) -> Callable[[int], None]:
    """``trial(b)``: the run's micro-step, forward and backward, on the b longest rows on the device.

    The AdamW moments (2 x the trainable parameters' bytes), and with several processes DDP's bucket
    copy of the gradients, are held as one block meanwhile, since they appear only once the run has
    prepared the model and taken its first optimizer step. Gradients are dropped afterwards, buffers a
    step accumulates into (e.g. MoE routing counts) are put back and the RNG is forked, so the trials
    change neither the weights, nor the first step, nor the run's dropout draws.
    """
    device = accelerator.device
    model = inputs.adapted.model.to(device)
    rows = longest_rows(inputs)
    collate = inputs.train_collator or inputs.collator
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    reserved = (2 + (accelerator.num_processes > 1)) * grads  # AdamW moments (+ DDP's gradient buckets)

    buffers = [b for m in (model, *inputs.adapted.companions.values()) for b in m.buffers()]

    def trial(micro: int) -> None:
        loader = DataLoader(inputs.train, batch_sampler=[rows[:micro]], collate_fn=collate)
        batch = send_to_device(next(iter(loader)), device)
        saved = [b.clone() for b in buffers]
        reserve = torch.empty(reserved, dtype=torch.uint8, device=device)
        try:
            rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
            with rng, accelerator.autocast():
                plan.step(inputs.adapted, batch, accelerator.backward)
        finally:
            del reserve
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, value in zip(buffers, saved, strict=True):
                    buffer.copy_(value)

    return trial


def estimator(plan: Plan, inputs: TrainInputs, accelerator: Accelerator) -> Callable[[int], Estimate]:
    """``estimate(b)``: per-process training memory with micro-batches of b of the longest training rows.

    A micro-batch never holds more rows than the data has, nor tokens beyond the longest row; the
    estimate is taken on the run's model as built (head and methods applied), under its autocast.
    """
    train, model = plan.cfg.train, inputs.adapted.model
    rows = len(inputs.train)
    length = max(row_lengths(inputs.train))
    companions = list(inputs.adapted.companions.values())
    config = getattr(model, "config", None)
    matmul = 2 if accelerator.mixed_precision in ("bf16", "fp16") else FP32

    def estimate(micro: int) -> Estimate:
        shape = Shape(min(micro, rows), length, matmul, checkpointing=train.gradient_checkpointing)
        return estimate_model(model, config, shape, companions, accelerator.num_processes)

    return estimate


def _fit_memory(plan: Plan, inputs: TrainInputs, accelerator: Accelerator, effective: int) -> tuple[int, str]:
    """The CPU choice: the largest micro-batch whose estimate fits the budget, and how it was decided."""
    estimate = estimator(plan, inputs, accelerator)
    smallest = estimate(1)
    length = smallest.shape.seq_len
    budget, source = memory_budget(plan.cfg.train, smallest.get("parameters"), accelerator.num_processes)
    micro = fit_budget(effective, budget, estimate)
    if micro is None:
        terms = ", ".join(f"{t.name} {t.nbytes / MiB:.1f}" for t in smallest.terms)
        raise ConfigError(
            f"train.memory_limit_mb: micro-batch 1 of {length} tokens needs an estimated "
            f"{smallest.total / MiB:.1f} MiB ({terms}) but the budget ({source}) is {budget / MiB:.1f} MiB; "
            f"raise train.memory_limit_mb, or {LIGHTER}"
        )
    fitted = estimate(micro).total / MiB
    return micro, f"estimate {fitted:.1f} MiB of {source} {budget / MiB:.1f} MiB at {length} tokens"


def _agreed(accelerator: Accelerator, micro: int) -> int:
    """The smallest choice over all processes (a divisor too), so every rank cuts the same batches."""
    if accelerator.num_processes == 1:
        return micro
    choice = torch.tensor([micro], device=accelerator.device)
    torch.distributed.all_reduce(choice, op=torch.distributed.ReduceOp.MIN)
    return int(choice.item())


def auto_batch_size(plan: Plan, inputs: TrainInputs, accelerator: Accelerator) -> Plan:
    """``plan`` with the micro-batch and accumulation ``train.auto_batch_size`` finds (module docstring).

    Unchanged when the switch is off or nothing trains (a zero-shot run). Logs the choice in one line.
    """
    train = plan.cfg.train
    if not train.auto_batch_size or len(inputs.train) == 0:
        return plan
    effective = train.batch_size * train.gradient_accumulation_steps
    if accelerator.device.type == "cuda":
        if train.memory_limit_mb is not None:
            warnings.warn("train.memory_limit_mb is ignored on CUDA: real steps are tried", stacklevel=2)
        micro = fit_trial(effective, step_trial(plan, inputs, accelerator))
        how = "the largest that ran a forward + backward on the longest rows"
    else:
        micro, how = _fit_memory(plan, inputs, accelerator, effective)
    micro = _agreed(accelerator, micro)
    logger.info(
        "train.auto_batch_size: micro-batch %d x accumulation %d = effective batch %d (%s)",
        micro,
        effective // micro,
        effective,
        how,
    )
    return with_micro_batch(plan, micro)
