"""Metrics sink: JSONL history + TensorBoard scalars, written by the main process only.

``LogWindow`` accumulates what the next log line averages, and is checkpointed with the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from tunelab.io import atomic_write

HISTORY_FILE = "metrics.jsonl"


class Tracker:
    """Append scalars to ``metrics.jsonl`` and TensorBoard under ``output_dir/tb``.

    Both sinks start at ``start_step`` (the step a run resumes from, 0 for a fresh one): records of later
    steps, written by a run that died after its last checkpoint, are dropped, so each step the resumed
    run repeats is recorded once. ``metrics.jsonl`` is rewritten atomically; TensorBoard gets
    ``purge_step``, which hides the later events of the earlier event files.
    """

    def __init__(self, output_dir: Path, enabled: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        self._writer = None
        self._history = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            output_dir.mkdir(parents=True, exist_ok=True)
            history = output_dir / HISTORY_FILE
            if history.is_file():
                atomic_write(history, "".join(_records_until(history, start_step)))
            self._writer = SummaryWriter(log_dir=str(output_dir / "tb"), purge_step=start_step + 1)
            self._history = open(history, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        """Record numeric ``values`` (keys like ``train/loss``) at ``step``."""
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        assert self._writer is not None
        assert self._history is not None
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)
        self._history.write(json.dumps({"step": step, **scalars}) + "\n")
        self._history.flush()

    def flush(self) -> None:
        """Put every event logged so far on disk; the loop calls it before each checkpoint.

        TensorBoard writes events from a queue in a background thread: a run killed right after a
        checkpoint could otherwise lose events of steps before it, which the resumed run never repeats.
        """
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close both sinks."""
        if self._writer is not None:
            self._writer.close()
        if self._history is not None:
            self._history.close()


def _records_until(path: Path, step: int) -> list[str]:
    """The complete lines of ``path`` recorded at ``step`` or before (a killed write leaves no newline)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]


def read_history(output_dir: Path) -> list[dict[str, float]]:
    """All records of ``metrics.jsonl`` in the order logged: each step once per kind (train, eval)."""
    path = output_dir / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class LogWindow:
    """What the next log averages: the steps since the last one (loss, samples, training time, metrics).

    Saved in every checkpoint (``state``/``restore``), so a resumed run's first log covers the same
    steps as the uninterrupted run's, those before the checkpoint included, and equals it exactly.
    ``loss`` is this rank's share of the summed step losses; method metrics (``StepOutput.metrics``,
    hook results) become train/<key> means.
    """

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.steps, self.samples, self.time = 0, 0, 0.0
        self.sums: dict[str, float | torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Accumulate without reading tensors back, so a micro-step never waits for the device."""
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        """The metric means as train/<key>; the whole window (loss, counts, time) starts over."""
        means = {f"train/{k}": float(v) / self.counts[k] for k, v in self.sums.items()}
        self.loss.zero_()
        self.steps, self.samples, self.time = 0, 0, 0.0
        self.sums, self.counts = {}, {}
        return means

    def state(self, accelerator: Accelerator) -> dict[str, Any]:
        """The window as JSON values; ``loss`` lists every rank's share (a collective: all ranks call it).

        Sums of float32 tensors are exact as Python floats, and adding the next tensor casts them back.
        """
        shares = accelerator.gather(self.loss.reshape(1)).tolist()
        sums = {k: float(v) for k, v in self.sums.items()}
        return {
            "loss": shares,
            "steps": self.steps,
            "samples": self.samples,
            "time": self.time,
            "sums": sums,
            "counts": dict(self.counts),
        }

    def restore(self, state: Mapping[str, Any], accelerator: Accelerator) -> None:
        """Continue the window ``state`` saved; under another world size rank 0 takes the whole loss."""
        shares = state["loss"]
        if len(shares) == accelerator.num_processes:
            self.loss.fill_(shares[accelerator.process_index])
        elif accelerator.is_main_process:  # the log's sum over ranks stays the same
            self.loss.fill_(sum(shares))
        self.steps, self.samples, self.time = state["steps"], state["samples"], state["time"]
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])
