"""Continual learning, the forgetting table: RT sentiment (task A), then BBC topics (task B) from it.

    python bench/bench_continual.py [--threads 1] [--runs bench/out/continual]

Trains examples/continual_rt.yaml (A), then each B variant from A's run (``model.previous_run``):
plain fine-tuning (examples/continual_bbc.yaml), rehearsal (continual_bbc_rehearsal.yaml) and EWC
(continual_bbc_ewc.yaml, at each ``--ewc-strength``), every run a ``tunelab train`` subprocess
measured by the harness. Sizes are the examples': A 1,000 RT train rows (length 64), B 500 BBC train
rows (length 128), 1 epoch each, batch 16, lr 1e-4, dev and test capped at 300 rows per split.

The figures come from the runs' own reports: A's accuracy before B is A's ``best/metrics.json``
test accuracy; after B, B's ``previous_test`` section (A's test rows, read again from A's record,
scored on A's two label columns of the grown head, and on all seven labels); B's accuracy is B's test
accuracy. A run dir that holds a finished report is reused (``--runs`` elsewhere for fresh runs).
Writes the ``continual`` section of bench/RESULTS.md and the raw JSON to ``<runs>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import harness
from harness import OUT, ROOT

EXAMPLES = ROOT / "examples"
DATA = {"rotten-tomatoes": "data/rotten-tomatoes", "bbc-news": "data/bbc-news"}


def train(example: Path, run: Path, threads: int, *overrides: str) -> dict[str, Any]:
    """``tunelab train example`` into ``run`` (unless it holds a finished report); its report and cost."""
    report = run / "best" / "metrics.json"
    row: dict[str, Any] = {"reused": report.is_file()}
    if not report.is_file():
        cmd = [sys.executable, "-m", "tunelab.cli", "train", str(example), "--overwrite"]
        cmd += ["--train.output_dir", str(run), *overrides]
        measured = harness.run(cmd, run.with_suffix(".log"), env=harness.child_env(threads, offline=True))
        row |= harness.require_ok(measured, run.name)
    return row | {"metrics": json.loads(report.read_text(encoding="utf-8"))}


def bench(runs: Path, threads: int, strengths: list[float]) -> dict[str, Any]:
    """A once, then every B variant from it; each row's report and measured cost."""
    for asset, path in DATA.items():
        if not (ROOT / path / "train.csv").is_file():
            cmd = [sys.executable, "-m", "tunelab.cli", "data", "prepare", asset, path]
            harness.require_ok(
                harness.run(cmd, runs / f"prepare-{asset}.log", env=harness.child_env()), asset
            )
    a_run = runs / "rt"
    result: dict[str, Any] = {"A": train(EXAMPLES / "continual_rt.yaml", a_run, threads)}
    previous = ("--model.previous_run", str(a_run))
    variants: list[tuple[str, str, tuple[str, ...]]] = [
        ("plain fine-tuning", "continual_bbc.yaml", ()),
        ("rehearsal (buffer 200, ratio 0.25)", "continual_bbc_rehearsal.yaml", ()),
        *(
            (
                f"EWC (strength {s:g}, 500 Fisher rows)",
                "continual_bbc_ewc.yaml",
                ("--methods[1].params.strength", str(s)),
            )
            for s in strengths
        ),
    ]
    result["B"] = {}
    for i, (name, example, overrides) in enumerate(variants):
        result["B"][name] = train(EXAMPLES / example, runs / f"bbc-{i}", threads, *previous, *overrides)
    return result


def _cost(row: dict[str, Any]) -> str:
    if row["reused"]:
        return "reused"
    return f"{row['wall_s']:.0f} s (other cores {row['foreign_cores']:.2f})"


def markdown(result: dict[str, Any], prov: dict[str, Any]) -> str:
    """The RESULTS.md section: provenance, sizes, the forgetting table."""
    a = result["A"]["metrics"]
    lines = [
        "## Continual learning: RT sentiment, then BBC topics (MiniLM; plain fine-tuning, rehearsal, EWC)",
        "",
        *harness.provenance_lines(prov),
        "",
        "Task A: examples/continual_rt.yaml, 1,000 RT train rows (length 64), 1 epoch. Task B: "
        "examples/continual_bbc*.yaml from A's run (`model.previous_run`), 500 BBC train rows (length "
        "128), 1 epoch; batch 16, lr 1e-4, seed 42; the head grows from A's 2 labels to 7 (A's rows "
        "copied). Test sets: A's and B's prepared test.csv, 300 rows each (`max_eval_samples`). "
        "A after B = B's `previous_test` report: task-aware (argmax over A's 2 label columns) and over "
        "all 7 labels (an RT row predicted as a topic is wrong). One seed per row.",
        "",
        f"A before B (A's own run): test accuracy {a['test']['accuracy']:.3f}; run {_cost(result['A'])}.",
        "",
        "| B trained with | A test acc. after B (A's labels) | change vs before "
        "| A test acc. after B (all 7 labels) | B test accuracy | B test macro-F1 | B run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["B"].items():
        after, b = row["metrics"]["previous_test"], row["metrics"]["test"]
        lines.append(
            f"| {name} | {after['accuracy']:.3f} | {-after['forgetting']:+.3f} "
            f"| {after['accuracy_all_labels']:.3f} | {b['accuracy']:.3f} | {b['macro_f1']:.3f} "
            f"| {_cost(row)} |"
        )
    lines += ["", f"- {harness.CONTENTION_NOTE}"]
    return "\n".join(lines)


def main() -> None:
    """Train A and the B variants (or reuse them), write the RESULTS section and the raw JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every training run")
    parser.add_argument(
        "--runs", type=Path, default=OUT / "continual", help="run dirs (finished ones reused)"
    )
    parser.add_argument(
        "--ewc-strength", type=float, nargs="+", default=[10000.0], help="one EWC row per strength"
    )
    args = parser.parse_args()
    os.chdir(ROOT)  # the examples' data paths are relative to the repository
    args.runs.mkdir(parents=True, exist_ok=True)
    prov = harness.provenance(threads=args.threads)
    result = bench(args.runs.resolve(), args.threads, args.ewc_strength)
    (args.runs / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    harness.write_section("continual", markdown(result, prov))
    print(json.dumps(result, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
