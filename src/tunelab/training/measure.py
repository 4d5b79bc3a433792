"""The measured memory of a few real training steps, beside the estimate (``tunelab estimate --measure``).

The caller runs :func:`measure_steps` in a fresh process, so nothing an earlier model left behind
counts. The steps are the run's own (``train``'s optimizer step, on the micro-batches ``train``
builds), taken from the optimizer steps whose micro-batches hold the most padded tokens, i.e. where
the run peaks. What the number includes:

- CPU: the growth of the resident set during the steps, VmHWM (the kernel's high-water mark, reset
  through ``/proc/self/clear_refs`` right before the first step) minus VmRSS before it (model,
  data and libraries loaded). It holds everything the steps allocate: gradients, AdamW state,
  activations, autocast copies, and also backward's transient buffers, which the estimate leaves
  out. glibc is first told to unmap every freed block of 64 KiB or more (:func:`_unmap_on_free`),
  so the resident set follows the tensors alive rather than what malloc once reserved.
- CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the first step
  (tensors only; the caching allocator's reserve is not counted).
"""

from __future__ import annotations

import ctypes
import gc
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table

from tunelab.config import RunConfig
from tunelab.training import build_accelerator, prepare_inputs, resolve
from tunelab.training.loop import TrainingRun
from tunelab.training.memory import Estimate

MiB = 2**20
STATUS = Path("/proc/self/status")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@dataclass(frozen=True)
class Measured:
    """Bytes before the first step and at the peak of the steps, and the micro-batches measured."""

    before: int
    peak: int
    steps: int
    batch: int  # rows of the largest micro-batch measured
    seq_len: int  # its padded length
    device: str

    @property
    def growth(self) -> int:
        """What the steps added at their peak: the number to hold against the estimate's step terms."""
        return self.peak - self.before


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` size line (kB) in bytes."""
    line = next(line for line in STATUS.read_text().splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024


def _unmap_on_free(threshold: int = 64 * 1024) -> None:
    """Have glibc map each block of ``threshold`` bytes or more on its own, and unmap it when freed.

    By default glibc raises its mmap threshold as large blocks are freed and keeps their memory for
    reuse, so the resident set shows the most ever reserved, not the most in use: one LoRA step of
    MiniLM grew it by 1.9x the live tensors. A fixed threshold also turns that adjustment off. Other C
    libraries have no ``mallopt``; there the measure includes what their malloc keeps.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, threshold)


def _reset_peak(device: torch.device) -> int:
    """Restart the high-water mark; returns the bytes in use now."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size (Linux)
    return _status_bytes("VmRSS")


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _status_bytes("VmHWM")


def measure_steps(cfg: RunConfig, steps: int = 3) -> Measured:
    """Run ``steps`` optimizer steps of ``cfg`` (one process, its longest micro-batches) and measure them.

    Nothing is written outside a temporary directory, and no evaluation or checkpoint runs.
    """
    _unmap_on_free()
    with tempfile.TemporaryDirectory(prefix="tunelab-measure-") as tmp:
        train = cfg.train.model_copy(update={"output_dir": Path(tmp)})
        plan = resolve(cfg.model_copy(update={"train": train}))
        accelerator = build_accelerator(plan.cfg.train)
        run = TrainingRun(plan, prepare_inputs(plan), accelerator, None, None, None)

        def padded(batch: list[int]) -> tuple[int, int]:
            return len(batch) * max(run.lengths[r] for r in batch), len(batch)

        groups = sorted(run.epoch_groups(), key=lambda g: max(padded(b) for b in g), reverse=True)[:steps]
        largest = max((b for g in groups for b in g), key=padded)
        run.model.train()
        gc.collect()
        before = _reset_peak(accelerator.device)
        for group in groups:
            run.optimizer_step(group)
        peak = _peak(accelerator.device)
        run.tracker.close()
    return Measured(
        before=before,
        peak=peak,
        steps=len(groups),
        batch=len(largest),
        seq_len=max(run.lengths[r] for r in largest),
        device=accelerator.device.type,
    )


def memory_table(estimate: Estimate, measured: Measured | None = None) -> Table:
    """Term | formula | estimate MiB (| measured MiB): the estimate, and the measured step growth."""
    shape = estimate.shape
    title = (
        f"memory per device: micro-batch {shape.batch} x {shape.seq_len} tokens, saved matmul inputs "
        f"{shape.matmul_bytes} B, world size {estimate.world_size}, shard {estimate.shard}"
    )
    table = Table(title=title)
    for column in ("term", "formula", "estimate MiB", *(["measured MiB"] if measured else [])):
        table.add_column(column, justify="left" if column in ("term", "formula") else "right")
    blank = [""] if measured else []
    for term in estimate.terms:
        table.add_row(term.name, term.formula, f"{term.nbytes / MiB:.1f}", *blank)
    table.add_row("total", "", f"{estimate.total / MiB:.1f}", *blank, end_section=True)
    if measured is not None:
        step_terms = estimate.total - estimate.get("parameters")
        where = "VmHWM - VmRSS" if measured.device == "cpu" else "max_memory_allocated - allocated"
        table.add_row(
            "step growth",
            f"total - parameters; measured {where}, {measured.steps} steps of "
            f"{measured.batch} x {measured.seq_len}",
            f"{step_terms / MiB:.1f}",
            f"{measured.growth / MiB:.1f}",
        )
        table.add_row(
            "before the steps", "resident: libraries, data, model", "", f"{measured.before / MiB:.1f}"
        )
    return table
