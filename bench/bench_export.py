"""Export benchmark: fp32 (plain transformers) vs tunelab's int8 / pruned+recovered / ONNX exports of one run.

    python bench/bench_export.py --run runs/sentiment [--threads 2 --repeats 20
        --prune-amount 0.5 --recovery-steps 100]

Run it from a directory where the run's relative data paths resolve (the dev split is rebuilt from
the run's recorded config exactly as training built it).

1. Each export is made by the real CLI (``python -m tunelab.cli export RUN --to DIR ...``) in its own
   subprocess; its wall time and its own parity report (tunelab_run.json) are kept.
2. Each variant is then measured in a fresh worker subprocess, one after another: load time, dev
   accuracy/macro-F1, median latency of a forward at batch 1 and 32 (the first dev rows, padded; 2
   warm-up runs, ``--repeats`` timed, torch/ORT threads fixed), weight files on disk, and the worker's
   peak RSS (``ru_maxrss`` from ``os.wait4``, ``harness.run``; every worker tokenises the dev split the
   same light way, so the differences are the models and runtimes), with the cores other processes
   used meanwhile.

Baselines measured the plain way in the same run: ``hf-fp32`` is ``AutoModelForSequenceClassification
.from_pretrained(best/)``; ``hf-int8-per-tensor`` is ``torch.ao.quantization.quantize_dynamic`` with
its default (per-tensor) qconfig applied in memory, as most tutorials show (it cannot be saved
without pickles, so it has no size).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import harness

# name -> extra `tunelab export` flags (None: measured from the source run, not exported)
EXPORTS: dict[str, list[str] | None] = {
    "hf-fp32": None,
    "hf-int8-per-tensor": None,
    "int8": ["--quantize", "int8"],
    "magnitude+recovered": ["--prune", "magnitude"],
    "neurons+recovered": ["--prune", "neurons"],
    "onnx": ["--onnx"],
}


def dev_features(run: Path):
    """The run's dev split, tokenised, without loading any model weights."""
    from transformers import AutoTokenizer

    from tunelab.config import validate_config
    from tunelab.export.parity import EvalSplit
    from tunelab.tasks import TASKS
    from tunelab.tasks.spec import tokenize_dataset

    info = json.loads((run / "best" / "tunelab_run.json").read_text())
    cfg = validate_config(info["config"])
    task = TASKS.get(info["task"])
    params = task.params.model_validate(info["task_params"])
    data = task.load_data(cfg.data, params, cfg.train.seed)
    tokenizer = AutoTokenizer.from_pretrained(run / "best")
    features = tokenize_dataset(task, params, tokenizer, data.dev, data.labels)
    return task, EvalSplit(features, data.dev, params), task.collator(tokenizer, params), data.labels


def load_variant(name: str, run: Path, out: Path, threads: int):
    """The model object for a variant, loaded the way its users would load it."""
    import torch

    if name in ("hf-fp32", "hf-int8-per-tensor"):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(run / "best").eval()
        if name == "hf-int8-per-tensor":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return model, [run / "best" / "model.safetensors"] if name == "hf-fp32" else []
    from tunelab.export.parity import weight_files

    if name == "onnx":
        from tunelab.export.onnx import OrtClassifier, ort_session

        return OrtClassifier(ort_session(out / name / "model.onnx", threads)), [out / name / "model.onnx"]
    from tunelab.inference.artifact import load_artifact

    return load_artifact(out / name).model, weight_files(out / name)


def worker(name: str, run: Path, out: Path, threads: int, repeats: int) -> dict:
    import torch

    from tunelab.export.parity import latency_batch, median_latency_ms, scored_metrics, weights_size_mb

    torch.set_num_threads(threads)
    task, split, collator, labels = dev_features(run)
    start = time.perf_counter()
    model, files = load_variant(name, run, out, threads)
    load_s = time.perf_counter() - start
    metrics = scored_metrics(model, task, split, collator, labels)
    latency = {
        b: median_latency_ms(model, latency_batch(split.features, collator, b, task), repeats)
        for b in (1, 32)
    }
    return {
        "variant": name,
        "load_s": load_s,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "size_mb": weights_size_mb(files) if files else None,
        "latency_ms_b1": latency[1],
        "latency_ms_b32": latency[32],
        "n_dev": len(split.features),
    }


def run_export(name: str, flags: list[str], args: argparse.Namespace) -> dict:
    dest = args.out / name
    cmd = [sys.executable, "-m", "tunelab.cli", "export", str(args.run), "--to", str(dest), "--overwrite"]
    cmd += [*flags, "--threads", str(args.threads)]
    if "--prune" in flags:
        cmd += ["--prune-amount", str(args.prune_amount), "--recovery-steps", str(args.recovery_steps)]
    done = harness.require_ok(harness.run(cmd, args.out / f"{name}.export.log"), f"export {name}")
    record = json.loads((dest / "tunelab_run.json").read_text())["export"]
    return {
        "export_wall_s": done["wall_s"],
        "export_peak_rss_mb": done["peak_rss_mb"],
        "export_foreign_cores": done["foreign_cores"],
        "command": " ".join(cmd[2:]),
        "record": record,
    }


COLUMNS = (
    "variant",
    "dev acc",
    "dev macro-F1",
    "size MB",
    "latency b1 ms",
    "latency b32 ms",
    "b32 speed-up vs hf-fp32",
    "peak RSS MB",
    "load s",
    "export wall s",
    "pruned: dev acc before recovery",
    "other cores (measure / export)",
)


def cells(row: dict, base: dict) -> list[str]:
    pruned = (row.get("record") or {}).get("pruned")
    return [
        row["variant"],
        f"{row['accuracy']:.4f}",
        f"{row['macro_f1']:.4f}",
        f"{row['size_mb']:.1f}" if row["size_mb"] is not None else "-",
        f"{row['latency_ms_b1']:.1f}",
        f"{row['latency_ms_b32']:.1f}",
        f"{base['latency_ms_b32'] / row['latency_ms_b32']:.2f}x",
        f"{row['peak_rss_mb']:.0f}",
        f"{row['load_s']:.2f}",
        f"{row['export_wall_s']:.0f}" if "export_wall_s" in row else "-",
        f"{pruned['dev_before_recovery']['accuracy']:.4f}" if pruned else "-",
        f"{row['foreign_cores']:.2f}"
        + (f" / {row['export_foreign_cores']:.2f}" if "export_foreign_cores" in row else ""),
    ]


def markdown(rows: list[dict], prov: dict, code_after: dict) -> str:
    base = next(r for r in rows if r["variant"] == "hf-fp32")
    lines = [*harness.provenance_lines(prov, code_after), f"- {harness.CONTENTION_NOTE}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row, base)) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=harness.OUT / "export")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--prune-amount", type=float, default=0.5)
    parser.add_argument("--recovery-steps", type=int, default=100)
    parser.add_argument("--variants", default=",".join(EXPORTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.run, args.out, args.threads, args.repeats)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    prov = harness.provenance(threads=args.threads, packages=("onnxruntime",), with_files=True)
    rows = []
    for name in args.variants.split(","):
        exported = run_export(name, EXPORTS[name], args) if EXPORTS[name] is not None else {}
        cmd = [sys.executable, __file__, "--run", str(args.run), "--out", str(args.out), "--worker", name]
        cmd += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        row = harness.run_worker(cmd, args.out / f"{name}.measure.log", f"worker {name}") | exported
        rows.append(row)
        print(f"{name}: acc {row['accuracy']:.4f}, b32 {row['latency_ms_b32']:.1f} ms", file=sys.stderr)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    print(markdown(rows, prov, harness.source_state(with_files=True)))


if __name__ == "__main__":
    main()
