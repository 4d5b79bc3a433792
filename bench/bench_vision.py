"""Vision transfer on Fashion-MNIST: a small ViT pretrained by masked image modelling vs random init.

    OMP_NUM_THREADS=1 python bench/bench_vision.py [--mim-steps 500] [--ft-steps 150] [--parallel 2]
        [--starts mim scratch] [--runs DIR]

Steps, each a ``tunelab`` subprocess on one thread, on the shipped ``fashion-mnist`` asset (Debian's
``dataset-fashion-mnist``, prepared into data/fashion-mnist as the examples read it):

1. ``examples/vision/mim_fashion.yaml``: SimMIM pretraining of a ViT (28x28 images, patch 4 -> 49
   patches, hidden 128, 4 layers, 4 heads) on the unlabelled train images (98% of the 60k; 2% is the
   dev split that picks best/), ``--mim-steps`` steps of 128 images;
2. ``examples/vision/finetune_fashion.yaml`` (from the MIM run's best/) and
   ``examples/vision/finetune_fashion_scratch.yaml`` (the same architecture, random init, same seed) at
   1% of the labels (``data.k_shot`` 60 per class = 600 images) and 10% (600 per class = 6,000), each
   for ``--ft-steps`` steps with the same batch size, learning rate and schedule, ``--parallel`` runs
   at a time; best/ is chosen on 2,000 dev images split off the train images, and scored once on a
   seeded 2,000-image subsample of the t10k test set (``data.max_eval_samples``);
3. ``tunelab export --quantize int8`` of the pretrained 10% model, whose parity report scores fp32 and
   int8 on that run's 2,000 dev images.

``--starts scratch`` runs only the random-init fine-tunes (no pretraining) and writes no section. A run
dir that already holds ``best/metrics.json`` is reused (an interrupted bench resumes; delete it to
retrain); a reused run's wall time is its run dir's (run_config.yaml written -> last metrics line).
Results go between the ``bench:vision`` markers of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
from harness import ROOT

OUT = harness.OUT / "vision"
DATA = ROOT / "data" / "fashion-mnist"
EXAMPLES = ROOT / "examples" / "vision"
SHOTS = {"1%": 60, "10%": 600}  # labelled train images per class (10 classes)
STARTS = {"mim": "finetune_fashion.yaml", "scratch": "finetune_fashion_scratch.yaml"}
START_NAMES = {"mim": "MIM-pretrained", "scratch": "random init"}


def tunelab(*args: str | Path) -> list[str]:
    """The command line of ``tunelab ARGS`` with this interpreter."""
    return [sys.executable, "-m", "tunelab.cli", *map(str, args)]


def train(example: Path, run_dir: Path, *overrides: str, stopped_ok: bool = False) -> dict[str, Any]:
    """Train ``example`` into ``run_dir`` (reused when it finished before): wall time and logged steps.

    ``stopped_ok`` also reuses a run stopped early (SIGTERM: it keeps the best/ of its last evaluation),
    whose dev metrics are then best/'s record.
    """
    done, best = run_dir / "best" / "metrics.json", run_dir / "best" / "tunelab_run.json"
    reuse = done.is_file() or (stopped_ok and best.is_file())
    row: dict[str, Any] = {"reused": reuse}
    if not reuse:
        cmd = tunelab("train", example, "--overwrite", "--train.output_dir", run_dir, *overrides)
        row |= harness.require_ok(
            harness.run(cmd, run_dir.with_suffix(".log"), env=harness.child_env(1)), run_dir.name
        )
    else:
        started = (run_dir / "run_config.yaml").stat().st_mtime
        row["wall_s"] = (run_dir / "metrics.jsonl").stat().st_mtime - started
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    record = json.loads(best.read_text())
    row |= {"steps": max(line["step"] for line in lines), "best_step": record["step"]}
    row |= json.loads(done.read_text()) if done.is_file() else {"dev": record["dev_metrics"]}
    return row


def export_int8(run_dir: Path) -> dict[str, Any]:
    """``tunelab export --quantize int8`` with its parity report on the run's dev images."""
    out = run_dir.with_suffix(".int8.json")
    if not out.is_file():
        cmd = tunelab(
            "export", run_dir, "--to", run_dir.parent / f"{run_dir.name}-int8", "--quantize", "int8",
            "--threads", "1", "--overwrite",
        )  # fmt: skip
        row = harness.run(cmd, run_dir.with_suffix(".int8.log"), env=harness.child_env(1), stdout=out)
        harness.require_ok(row, f"int8 export of {run_dir.name}")
    return json.loads(out.read_text())


def finetune(runs: Path, start: str, shots: int, ft_steps: int) -> dict[str, Any]:
    """One fine-tune of ``start`` (mim or scratch) on ``shots`` labelled images per class."""
    run_dir = runs / f"ft-{start}-{shots}"
    overrides = ["--data.k_shot", str(shots), "--train.max_steps", str(ft_steps)]
    overrides += ["--train.eval_steps", str(ft_steps // 5), "--train.save_steps", str(ft_steps)]
    if start == "mim":
        overrides += ["--model.name_or_path", str(runs / "mim" / "best")]
    row = train(EXAMPLES / STARTS[start], run_dir, *overrides)
    share = next(name for name, n in SHOTS.items() if n == shots)
    return {"start": START_NAMES[start], "labels": share, "shots": shots, **row}


def bench(runs: Path, starts: list[str], mim_steps: int, ft_steps: int, parallel: int) -> dict[str, Any]:
    """Pretrain (when a start needs it), fine-tune each (start, labels) pair, export one to int8."""
    if not (DATA / "labels.txt").is_file():
        cmd = tunelab("data", "prepare", "fashion-mnist", DATA)
        harness.require_ok(harness.run(cmd, OUT / "prepare.log", env=harness.child_env()), "prepare")
    mim = None
    if "mim" in starts:
        mim = train(
            EXAMPLES / "mim_fashion.yaml",
            runs / "mim",
            "--train.max_steps", str(mim_steps), "--train.eval_steps", str(mim_steps // 4),
            "--train.save_steps", str(mim_steps), stopped_ok=True,
        )  # fmt: skip
    pairs = [(start, shots) for start in starts for shots in SHOTS.values()]
    with ThreadPoolExecutor(parallel) as pool:
        rows = list(pool.map(lambda pair: finetune(runs, *pair, ft_steps), pairs))
    int8 = export_int8(runs / f"ft-mim-{SHOTS['10%']}")["parity"] if "mim" in starts else None
    result = {"mim": mim, "mim_steps": mim_steps, "finetune": rows, "int8": int8, "ft_steps": ft_steps}
    return result | {"parallel": parallel}


def markdown(result: dict[str, Any], prov: dict[str, Any]) -> str:
    """The RESULTS.md section: the accuracy table, the pretraining run and the int8 export."""
    mim, int8 = result["mim"], result["int8"]
    lines = [
        "## Vision transfer: MIM-pretrained ViT vs random init on Fashion-MNIST (`bench/bench_vision.py`)",
        "",
        *harness.provenance_lines(prov),
        "- pretraining: SimMIM (mask ratio 0.6) of a ViT (28x28, patch 4 -> 49 patches, hidden 128, "
        "4 layers, 4 heads, 0.8M parameters) on 58,800 unlabelled train images, "
        f"{mim['steps']} steps of 128 images ({mim['steps'] * 128 / 58800:.2f} epochs) in "
        f"{mim['wall_s'] / 60:.1f} min wall on 1 thread (a shared, loaded machine)"
        + (
            f", stopped (SIGTERM) for the time budget before the planned {result['mim_steps']} "
            "(so its learning rate never decayed)"
            if mim["steps"] < result["mim_steps"]
            else ""
        )
        + f"; best/ (used below) "
        f"from step {mim['best_step']}, dev masked-pixel L1 {mim['dev']['reconstruction_loss']:.4f}",
        f"- fine-tuning: {result['ft_steps']} steps of 64 images, lr 1e-3 (linear decay, 10% warmup), "
        "the same for both starts; best/ on 2,000 dev images split off train; labelled rows are "
        "`data.k_shot` per class (seed 42); test = a seeded 2,000-image subsample of the 10,000-image "
        f"t10k set (`data.max_eval_samples`); {result['parallel']} fine-tunes ran at a time",
        "",
        "| labels | start | test accuracy | test macro-F1 | dev accuracy (best/) | train wall |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["finetune"]:
        wall = f"{row['wall_s']:.0f} s" if "wall_s" in row else "reused"
        lines.append(
            f"| {row['labels']} ({row['shots'] * 10:,} images) | {row['start']} "
            f"| {row['test']['accuracy']:.4f} | {row['test']['macro_f1']:.4f} "
            f"| {row['dev']['accuracy']:.4f} | {wall} |"
        )
    before, after = int8["before"], int8["after"]
    lines += [
        "",
        "int8 export (`tunelab export --quantize int8`) of the MIM-pretrained 10% model, its parity "
        f"report on that run's 2,000 dev images: accuracy {before['metrics']['accuracy']:.4f} (fp32) -> "
        f"{after['metrics']['accuracy']:.4f} (int8), weights {before['size_mb']:.2f} MB -> "
        f"{after['size_mb']:.2f} MB, batch-32 latency {before['latency_ms']['32']:.0f} -> "
        f"{after['latency_ms']['32']:.0f} ms (1 thread).",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the bench and write its RESULTS.md section (when both starts ran)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mim-steps", type=int, default=500)
    parser.add_argument("--ft-steps", type=int, default=150)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--starts", nargs="+", choices=sorted(STARTS), default=sorted(STARTS))
    parser.add_argument("--runs", type=Path, default=OUT)
    args = parser.parse_args()
    os.chdir(ROOT)  # the examples' data paths are relative to the repository
    prov = harness.provenance(threads=1)
    result = bench(args.runs.resolve(), args.starts, args.mim_steps, args.ft_steps, args.parallel)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"result-{'-'.join(args.starts)}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if set(args.starts) == set(STARTS):
        harness.write_section("vision", markdown(result, prov))


if __name__ == "__main__":
    main()
