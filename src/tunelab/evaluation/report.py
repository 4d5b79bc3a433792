"""Human-facing evaluation outputs: metrics.json, confusion-matrix and loss-curve PNGs, a console table."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from tunelab.io import atomic_write  # noqa: E402


def _save_png(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> None:
    """Confusion matrix (rows = gold, columns = predicted) with counts in the cells."""
    size = max(3.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(
                j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black"
            )
    _save_png(fig, path)


def plot_loss_curve(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """Training loss per logged step, with dev loss where evaluated."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    train = [(r["step"], r["train/loss"]) for r in history if "train/loss" in r]
    dev = [(r["step"], r["eval/loss"]) for r in history if "eval/loss" in r]
    if train:
        ax.plot(*zip(*train, strict=False), label="train loss")
    if dev:
        ax.plot(*zip(*dev, strict=False), marker="o", label="dev loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    ax.grid(alpha=0.3)
    _save_png(fig, path)


def write_report(
    out_dir: Path,
    metrics: Mapping[str, Mapping[str, Any]],
    labels: Sequence[str],
    history: Sequence[Mapping[str, float]] = (),
) -> None:
    """metrics.json for every split, a confusion PNG per split, and the loss curve when history exists."""
    atomic_write(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    for split, values in metrics.items():
        if "confusion_matrix" in values:
            plot_confusion(
                values["confusion_matrix"], labels, out_dir / f"confusion_{split}.png", f"{split} set"
            )
    if history:
        plot_loss_curve(history, out_dir / "loss_curve.png")


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> Table:
    """One row per scalar metric (the task decides which exist), one column per split."""
    table = Table(title="evaluation")
    keys = dict.fromkeys(
        k for values in metrics.values() for k, v in values.items() if isinstance(v, int | float | None)
    )
    table.add_column("metric")
    for split in metrics:
        table.add_column(split, justify="right")
    for key in keys:
        cells = [values.get(key) for values in metrics.values()]
        table.add_row(
            key, *("-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells)
        )
    return table
