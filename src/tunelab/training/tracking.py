"""Metrics sink: JSONL history + TensorBoard scalars, written by the main process only."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
