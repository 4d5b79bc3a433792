"""Run directories under the console's root, read in place: summaries, curves, config diffs, routing.

Nothing is copied or cached: every request reads ``run_config.yaml``, ``metrics.jsonl`` and
``best/metrics.json`` of the run it names, so a run that is training shows its newest records. A run
is a directory holding ``run_config.yaml`` (written before the first step) anywhere below the root;
names are their paths relative to the root, and :func:`run_path` refuses every name that leaves it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.io import parse_yaml
from tunelab.training.tracking import HISTORY_FILE

RUN_CONFIG = "run_config.yaml"
BEST_METRICS = Path("best") / "metrics.json"
_NOT_RUNS = frozenset({"best", "checkpoints", "tb", "init"})  # what a run dir holds, never runs themselves
# A run not started by this console (``tunelab train`` in a shell) counts as training while it has no
# final report and its metrics.jsonl changed this recently: the loop logs every few seconds.
ACTIVE_S = 60.0


class RunNotFound(TunelabError):
    """The name is no run below the console's root (or leaves it); the API answers 404."""


def run_path(root: Path, name: str) -> Path:
    """The run dir ``name`` below ``root``; refuses absolute names, ``..`` and symlinks that lead out."""
    base = root.resolve()
    path = (base / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(base) or path == base:
        raise RunNotFound(f"{name}: not a run under {root}")
    if not (path / RUN_CONFIG).is_file():
        raise RunNotFound(f"{name}: no {RUN_CONFIG} under {root / name}")
    return path


def find_runs(root: Path) -> list[str]:
    """Names of every run dir below ``root``, sorted; a run's own subdirs are not searched."""
    base = root.resolve()
    found: list[str] = []

    def walk(path: Path) -> None:
        if (path / RUN_CONFIG).is_file():
            found.append(path.relative_to(base).as_posix())
            return
        for child in sorted(path.iterdir()):
            if child.is_dir() and not child.is_symlink() and child.name not in _NOT_RUNS:
                walk(child)

    if base.is_dir():
        walk(base)
    return found


def read_config(path: Path) -> dict[str, Any]:
    """The run's resolved config as written by ``train`` (every default explicit)."""
    config: dict[str, Any] = parse_yaml((path / RUN_CONFIG).read_text(encoding="utf-8"))
    return config


def read_records(path: Path, offset: int = 0) -> tuple[list[dict[str, float]], int]:
    """The complete ``metrics.jsonl`` records after byte ``offset`` and the offset after the last one.

    A line still being written has no newline yet and is left for the next read, so a reader tailing
    a training run never sees half a record.
    """
    history = path / HISTORY_FILE
    if not history.is_file():
        return [], offset
    with open(history, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    complete = data[: data.rfind(b"\n") + 1]
    records = [json.loads(line) for line in complete.decode("utf-8").splitlines()]
    return records, offset + len(complete)


def best_metrics(path: Path) -> dict[str, Any]:
    """``best/metrics.json`` (dev/test reports, the MoE router's health) or empty before the run ends."""
    file = path / BEST_METRICS
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


def training_elsewhere(path: Path) -> bool:
    """Whether the run looks alive although this console did not start it (see ``ACTIVE_S``)."""
    history = path / HISTORY_FILE
    if (path / BEST_METRICS).is_file() or not history.is_file():
        return False
    return time.time() - history.stat().st_mtime < ACTIVE_S


def _scalars(report: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def summary(root: Path, name: str, started_here: bool) -> dict[str, Any]:
    """One row of the runs table: task, methods, status, last step and the metrics to sort by.

    ``started_here``: the console's own job for the run is still running.

    ``metrics`` holds the final dev/test report's scalars when the run finished (``dev/accuracy``),
    else the newest eval record's (``eval/accuracy``), so an unfinished run still sorts.
    """
    path = run_path(root, name)
    config = read_config(path)
    records, _ = read_records(path)
    best = best_metrics(path)
    metrics: dict[str, float] = {}
    for record in records:
        metrics.update({k: v for k, v in record.items() if k.startswith("eval/")})
    for split in ("dev", "test"):
        metrics.update({f"{split}/{k}": v for k, v in _scalars(best.get(split, {})).items()})
    running = started_here or training_elsewhere(path)
    status = "running" if running else ("finished" if best else "stopped")
    return {
        "name": name,
        "task": config["task"]["name"],
        "methods": [m["name"] for m in config["methods"]],
        "status": status,
        "step": max((r["step"] for r in records), default=0),
        "metrics": metrics,
    }


def routing_load(best: dict[str, Any]) -> list[list[float]]:
    """Tokens per routed expert, one row per MoE layer, on the dev split (empty for a dense model)."""
    return [layer["load"] for layer in best.get("router_dev", {}).get("layers", [])]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}``; lists index as ``methods[0].name``."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        out = {}
        for i, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: tree}


def config_diff(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The keys whose values differ between the configs, each with one value per config (None: absent)."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    rows = [{"key": k, "values": [f.get(k) for f in flat]} for k in keys]
    return [r for r in rows if any(v != r["values"][0] for v in r["values"])]
