"""Metrics sink: JSONL history + TensorBoard scalars, written by the main process only."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HISTORY_FILE = "metrics.jsonl"


class Tracker:
    """Append scalars to ``metrics.jsonl`` and TensorBoard under ``output_dir/tb``."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self._writer = None
        self._history = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            output_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(output_dir / "tb"))
            self._history = open(output_dir / HISTORY_FILE, "a", encoding="utf-8")  # noqa: SIM115

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

    def close(self) -> None:
        """Flush and close both sinks."""
        if self._writer is not None:
            self._writer.close()
        if self._history is not None:
            self._history.close()


def read_history(output_dir: Path) -> list[dict[str, float]]:
    """All records of ``metrics.jsonl``; after a resume the latest record for a step wins."""
    path = output_dir / HISTORY_FILE
    if not path.is_file():
        return []
    by_key: dict[tuple[int, tuple[str, ...]], dict[str, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_key[(int(record["step"]), tuple(sorted(record)))] = record
    return [by_key[key] for key in sorted(by_key)]
