"""Parity report for an export: dev metrics, size on disk, latency at batch 1 and 32, before vs after.

Measuring (``measure``) touches files and clocks; comparing (``parity_report``) is a pure function of
two measurements, and the table/markdown renderers are pure functions of the report, so the CLI,
``tunelab_run.json`` and the model card show the same numbers.

Latency is the median wall time of a no-grad forward over a fixed padded batch (the first rows of
the dev split), after warm-up, with the torch/ORT thread count fixed by the caller.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from tunelab.evaluation import evaluate
from tunelab.tasks.spec import Collate, TaskSpec

LATENCY_BATCHES = (1, 32)


@dataclass(frozen=True)
class Measurement:
    """What one model scored and cost; ``latency_ms`` maps batch size -> median milliseconds."""

    metrics: dict[str, float]
    size_mb: float
    latency_ms: dict[int, float]


def weights_size_mb(files: Sequence[Path]) -> float:
    """Size of the given weight files in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in files) / 1e6


@dataclass(frozen=True)
class EvalSplit:
    """The split a parity report scores: tokenised features, the raw examples, the task params.

    ``tokenizer`` decodes generated ids for the metrics of generating tasks (seq2seq).
    """

    features: Any
    examples: Any
    params: Any
    tokenizer: Any = None


def latency_batch(features: Any, collator: Collate, size: int, task: TaskSpec) -> dict[str, torch.Tensor]:
    """The first ``size`` dev rows (cycled if the split is smaller), padded, without the task's targets.

    A generating task (``TaskSpec.generation``, e.g. an encoder-decoder) keeps them: its decoder's
    inputs are the shifted targets, so without them a forward cannot run.
    """
    dropped = () if task.generation is not None else task.target_keys
    rows = [{k: v for k, v in features[i % len(features)].items() if k not in dropped} for i in range(size)]
    return dict(collator(rows))


@torch.inference_mode()
def median_latency_ms(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], repeats: int) -> float:
    """Median wall time of ``model(**batch)`` over ``repeats`` runs after two warm-up runs."""
    model.eval()
    for _ in range(2):
        model(**batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def scored_metrics(
    model: torch.nn.Module,
    task: TaskSpec,
    split: EvalSplit,
    collator: Any,
    labels: Sequence[str],
    batch_size: int = 64,
) -> dict[str, float]:
    """The task's headline metrics plus loss (no per-class detail) of ``model`` on ``split``."""
    scores = evaluate(
        model,
        task,
        split.features,
        collator,
        labels,
        batch_size,
        params=split.params,
        examples=split.examples,
        tokenizer=split.tokenizer,
    )
    return {name: float(scores[name]) for name in (*task.metric_names, "loss") if scores[name] is not None}


def measure(
    model: torch.nn.Module,
    task: TaskSpec,
    split: EvalSplit,
    collator: Any,
    labels: Sequence[str],
    files: Sequence[Path],
    repeats: int,
    batch_size: int = 64,
) -> Measurement:
    """Dev metrics, weight-file size and batch-1/32 latency of ``model``."""
    return Measurement(
        metrics=scored_metrics(model, task, split, collator, labels, batch_size),
        size_mb=weights_size_mb(files),
        latency_ms={
            size: median_latency_ms(model, latency_batch(split.features, collator, size, task), repeats)
            for size in LATENCY_BATCHES
        },
    )


def parity_report(before: Measurement, after: Measurement, metric: str) -> dict[str, Any]:
    """Side-by-side numbers plus the deltas a reader asks for: metric drop, size ratio, speed-ups."""
    return {
        "metric": metric,
        "before": asdict(before),
        "after": asdict(after),
        "metric_drop": before.metrics[metric] - after.metrics[metric],
        "size_ratio": after.size_mb / before.size_mb if before.size_mb else None,
        "speedup": {
            size: before.latency_ms[size] / after.latency_ms[size] if after.latency_ms[size] else None
            for size in before.latency_ms
        },
    }


def parity_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(quantity, before, after, change) rows shared by the console table and the model card."""
    before, after = report["before"], report["after"]
    rows = [
        (
            f"dev {name}",
            f"{before['metrics'][name]:.4f}",
            f"{after['metrics'][name]:.4f}",
            f"{after['metrics'][name] - before['metrics'][name]:+.4f}",
        )
        for name in before["metrics"]
        if name in after["metrics"]
    ]
    ratio = report["size_ratio"]
    rows.append(
        ("size MB", f"{before['size_mb']:.1f}", f"{after['size_mb']:.1f}", f"x{ratio:.2f}" if ratio else "-")
    )
    for size, speedup in report["speedup"].items():
        rows.append(
            (
                f"latency ms, batch {size}",
                f"{before['latency_ms'][size]:.1f}",
                f"{after['latency_ms'][size]:.1f}",
                f"{speedup:.2f}x faster" if speedup else "-",
            )
        )
    return rows


def parity_markdown(report: Mapping[str, Any]) -> str:
    """The parity rows as a Markdown table (model card)."""
    lines = ["| quantity | before | after | change |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in parity_rows(report)]
    return "\n".join(lines)


def parity_table(report: Mapping[str, Any]) -> Table:
    """The parity rows as a rich table (console)."""
    table = Table(title="export parity (dev split)")
    for column in ("quantity", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "quantity" else "right")
    for row in parity_rows(report):
        table.add_row(*row)
    return table
