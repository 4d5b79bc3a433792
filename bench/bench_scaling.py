"""Data-parallel scaling on this machine: one training process vs two gloo processes (torchrun).

Rows, each `tunelab train examples/sentiment.yaml` (MiniLM, Rotten Tomatoes, max_length 64) for
`--steps` optimizer steps at the same global batch of 32, launched by torch's own launcher:

- 1 process, 1 torch thread, batch 32 (one core's throughput: the unit of the efficiency figure);
- 1 process, 2 torch threads, batch 32 (what this 2-core machine gives without data parallelism);
- 2 processes (gloo), 1 torch thread each, batch 16 each (DDP over both cores).

    python bench/bench_scaling.py [--steps 40] [--repeats 2] [--write]

Samples/s is the loop's own `train/samples_per_s` (the global batch's rows, all ranks, over rank
0's step time) averaged over the logging windows after the first (warm-up). Scaling efficiency =
2-process samples/s / (2 x one-core samples/s): 1.0 would be perfect data parallelism; below it are
the gradient all-reduce over gloo (MiniLM: 22.7 M parameters, ~91 MB of fp32 gradients per step)
and the cores' shared memory bandwidth. The loss at the last step is printed beside: the same
global batch takes the same steps (up to dropout's random numbers, which differ per rank).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

import harness

CONFIG = harness.ROOT / "examples" / "sentiment.yaml"
ROWS = [
    ("1 process x 1 thread", 1, 1, 32),
    ("1 process x 2 threads", 1, 2, 32),
    ("2 processes (gloo) x 1 thread", 2, 1, 16),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_once(name: str, nproc: int, threads: int, batch: int, data: Path, steps: int, tag: str) -> dict:
    """One launch; samples/s of the windows after the first, and the last logged loss."""
    out = harness.OUT / "scaling" / tag
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        "-m",
        "tunelab.cli",
        "train",
        str(CONFIG),
        "--overwrite",
        *("--data.train_file", str(data / "train.csv"), "--data.test_file", str(data / "test.csv")),
        *("--data.max_eval_samples", "64", "--train.output_dir", str(out)),
        *("--train.max_steps", str(steps), "--train.batch_size", str(batch), "--train.logging_steps", "10"),
        *("--train.eval_steps", str(steps), "--train.save_steps", str(steps)),
    ]
    row = harness.require_ok(
        harness.run(cmd, out.with_suffix(".log"), env=harness.child_env(threads), max_wait_idle=120),
        name,
    )
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [h for h in history if "train/samples_per_s" in h]
    speeds = [h["train/samples_per_s"] for h in train[1:]]  # global: the loop counts all ranks' rows
    return {
        "speed": statistics.mean(speeds),
        "last_loss": train[-1]["train/loss"],
        "wall_s": row["wall_s"],
        "peak_rss_mb": row["peak_rss_mb"],
        "foreign_cores": row["foreign_cores"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=harness.OUT / "data")
    parser.add_argument("--write", action="store_true", help="replace RESULTS.md's bench:scaling section")
    args = parser.parse_args()
    from tunelab.assets import prepare_dataset

    data = args.data_root / "rotten-tomatoes"
    if not (data / "train.csv").is_file():
        prepare_dataset("rotten-tomatoes", data)
    prov = harness.provenance(threads="1-2 (per row)", with_files=True)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in ROWS}
    for repeat in range(args.repeats):  # rows interleaved, so drift hits every row alike
        for i, (name, nproc, threads, batch) in enumerate(ROWS):
            results[name].append(train_once(name, nproc, threads, batch, data, args.steps, f"r{repeat}_{i}"))
            print(f"{name}: {results[name][-1]['speed']:.1f} samples/s", file=sys.stderr)
    (harness.OUT / "scaling_results.json").write_text(json.dumps(results, indent=2))
    markdown = report(results, prov, harness.source_state(with_files=True), args)
    print(markdown)
    if args.write:
        harness.write_section("scaling", markdown)


def report(results: dict[str, list[dict]], prov: dict, code_after: dict, args: argparse.Namespace) -> str:
    median = {name: statistics.median(r["speed"] for r in runs) for name, runs in results.items()}
    one_core, two_threads, two_procs = (median[name] for name, *_ in ROWS)
    rows = [
        f"| {name} | {nproc} | {threads} | {batch} | {median[name]:.1f} "
        f"({', '.join(format(r['speed'], '.1f') for r in results[name])}) | "
        f"{statistics.mean(r['last_loss'] for r in results[name]):.4f} | "
        f"{max(r['peak_rss_mb'] for r in results[name]):.0f} | "
        f"{max(r['foreign_cores'] for r in results[name]):.2f} |"
        for name, nproc, threads, batch in ROWS
    ]
    return "\n".join(
        [
            "## Data-parallel scaling: 1 process vs 2 gloo processes (torchrun)",
            "",
            *harness.provenance_lines(prov, code_after),
            "- MiniLM on Rotten Tomatoes (examples/sentiment.yaml, max_length 64), "
            f"{args.steps} optimizer steps at global batch 32, {args.repeats} runs per row, "
            "rows interleaved; samples/s = the loop's "
            "train/samples_per_s (all ranks' rows) after the first logging window",
            f"- {harness.CONTENTION_NOTE}",
            "",
            "| row | processes | threads each | batch each | samples/s, median (runs) "
            "| loss at the last step | largest process peak RSS (MB) | other cores |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- scaling efficiency 1 -> 2 processes: {two_procs / (2 * one_core):.2f} "
            f"(2-process samples/s / (2 x one core's)); 2 processes vs 1 process on both cores: "
            f"{two_procs / two_threads:.2f}x",
            "",
        ]
    )


if __name__ == "__main__":
    main()
