"""Faithfulness of tunelab's explanations: deleting the top-k attributed words vs k random words.

    flock -x /tmp/tunelab-cpu.lock python bench/bench_explain.py [--texts 200] [--threads 1]

Builds (or reuses, when ``bench/out/explain/<run>/best`` exists) two quick MiniLM runs: Rotten Tomatoes
sentiment (2,000 training rows, 1 epoch, len 64) and WNUT-16 NER (3 epochs, len 64). For N test texts
each explained target is scored by comprehensiveness (DeYoung et al. 2020, ERASER): the drop of the
target's probability when its k most attributed words are deleted, against the mean drop over R draws
of k random words of the same text (``inference.explain.deletion_drops``), for integrated gradients and
attention rollout. Sentiment explains each text's predicted label; NER each predicted entity's first
word's tag. The table goes into bench/RESULTS.md between the ``bench:explain`` markers, with the CPU
model and flags; one rendered example is written to docs/img/explain_example.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

import harness
from harness import ROOT

OUT = harness.OUT / "explain"
RUNS = {
    "sentiment": {
        "dataset": "rotten-tomatoes",
        "files": ("train.csv", "test.csv"),
        "task": {"name": "classification", "params": {"max_length": 64}},
        "data": {"max_train_samples": 2000, "max_eval_samples": 500},
        "train": {"num_train_epochs": 1, "lr": 1e-4, "metric_for_best_model": "accuracy"},
    },
    "ner": {
        "dataset": "wnut16",
        "files": ("train.conll", "test.conll"),
        "task": {"name": "token_classification", "params": {"max_length": 64}},
        "data": {},
        "train": {"num_train_epochs": 3, "lr": 1e-4, "metric_for_best_model": "f1"},
    },
}


def cli(args: list[str], log_name: str, stdout: Path | None = None) -> dict:
    """A tunelab CLI subprocess; its wall time, peak RSS and contention."""
    row = harness.run(
        [sys.executable, "-m", "tunelab.cli", *args],
        OUT / f"{log_name}.log",
        env=harness.child_env(),
        stdout=stdout,
    )
    return harness.require_ok(row, log_name)


def build_run(name: str) -> tuple[Path, Path]:
    """(the run's best/ dir, its test file): trained here unless a previous bench run left it."""
    spec = RUNS[name]
    data_dir = OUT / "data" / spec["dataset"]
    train_file, test_file = (data_dir / f for f in spec["files"])
    if not train_file.is_file():
        cli(["data", "prepare", spec["dataset"], str(data_dir)], f"prepare-{name}")
    best = OUT / name / "best"
    if not (best / "config.json").is_file():
        cfg = {
            "model": {"name_or_path": "minilm-l6"},
            "data": {"train_file": str(train_file), "dev_ratio": 0.1, **spec["data"]},
            "task": spec["task"],
            "train": {
                "output_dir": str(OUT / name),
                "batch_size": 32,
                "warmup_ratio": 0.1,
                "logging_steps": 10,
                "save_steps": 100000,
                "seed": 42,
                **spec["train"],
            },
        }
        path = OUT / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cli(["train", str(path), "--overwrite"], f"train-{name}")
    return best, test_file


def read_texts(name: str, test_file: Path, n: int) -> list[dict]:
    """Records of the test split: seeded sample of review texts, or CoNLL tweets as word lists."""
    import numpy as np

    if name == "sentiment":
        import csv

        with open(test_file, encoding="utf-8") as fh:
            rows = [row["text"] for row in csv.DictReader(fh)]
        pick = np.random.default_rng(0).choice(len(rows), min(n, len(rows)), replace=False)
        return [{"text": rows[i]} for i in sorted(pick.tolist())]
    sentences, words = [], []
    for line in test_file.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            words.append(line.split("\t")[0])
        elif words:
            sentences.append({"text": words})
            words = []
    return sentences


def faithfulness(name: str, best: Path, test_file: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Per method: mean drops for top-k vs random deletions, and the time per explanation."""
    import numpy as np

    from tunelab.evaluation.faithfulness import deletion_drops
    from tunelab.inference.artifact import load_artifact
    from tunelab.inference.explain import explain_one
    from tunelab.inference.predict import predict_records

    art = load_artifact(best)
    records = read_texts(name, test_file, args.texts)
    predictions = predict_records(art, records, 32)
    if name == "ner":  # only tweets with a predicted entity have something to explain
        kept = [(r, p) for r, p in zip(records, predictions, strict=True) if p["entities"]][: args.texts]
        records, predictions = [r for r, _ in kept], [p for _, p in kept]
    rows, example = [], {}
    for method in ("ig", "rollout"):
        rng = np.random.default_rng(0)
        drops: dict[int, list[tuple[float, float]]] = {k: [] for k in args.k}
        deltas, n_explained = [], 0
        with harness.measure() as m:
            explained = [
                explain_one(art, r, p, method, steps=args.steps)
                for r, p in zip(records, predictions, strict=True)
            ]
        for record, explanations in zip(records, explained, strict=True):
            for explanation in explanations:
                n_explained += 1
                if explanation["convergence_delta"] is not None:
                    deltas.append(abs(explanation["convergence_delta"]))
                for d in deletion_drops(art, record, explanation, args.k, args.draws, rng):
                    drops[d.k].append((d.top, d.random))
        if method == "ig" and name == "sentiment":
            example = {"text": records[0]["text"], "explanations": explained[0]}
        for k, pairs in drops.items():
            top, rand = np.array(pairs).reshape(-1, 2).T
            rows.append(
                {
                    "task": name,
                    "method": method,
                    "k": k,
                    "n": len(pairs),
                    "top_drop": float(top.mean()),
                    "random_drop": float(rand.mean()),
                    "top_wins": float((top > rand).mean()),
                    "explanations": n_explained,
                    "ms_per_explanation": 1000 * m["wall_s"] / max(n_explained, 1),
                    "foreign_cores": m["foreign_cores"],
                    "mean_abs_delta": float(np.mean(deltas)) if deltas else None,
                    "inputs": len(records),
                }
            )
    return rows, example


def markdown(rows: list[dict], args: argparse.Namespace, prov: dict, code_after: dict, accuracy: dict) -> str:
    sentiment_acc, ner_f1 = accuracy.get("sentiment", float("nan")), accuracy.get("ner", float("nan"))
    header = (
        "| task | method | k | explanations counted | top-k drop | random-k drop | top > random "
        "| ms / explanation | mean abs ig delta | other cores |"
    )
    lines = [
        "## Explanations: faithfulness (comprehensiveness) of integrated gradients and attention rollout",
        "",
        *harness.provenance_lines(prov, code_after),
        "",
        "Runs built by this bench from the shipped MiniLM: Rotten Tomatoes sentiment (2,000 training rows, "
        f"1 epoch, len 64; dev accuracy {sentiment_acc:.3f}) and WNUT-16 NER (3 epochs, len 64; dev "
        f"entity F1 {ner_f1:.3f}). Sentiment: {args.texts} seeded test reviews, the predicted label "
        f"explained. NER: the first {args.texts} test tweets with a predicted entity, each entity's first "
        "word's tag explained. Drop = the explained label's probability on the input minus on the input "
        "with k words deleted: the k top-scored words (top) or k random words (mean over "
        f"{args.draws} draws; the explained NER word is never deleted); an input needs more than k "
        f"deletable words to count at k. ig: {args.steps} steps, pad baseline. Time = wall time of the "
        f"explanations alone, torch threads {args.threads}; {harness.CONTENTION_NOTE}.",
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = "-" if r["mean_abs_delta"] is None else f"{r['mean_abs_delta']:.4f}"
        lines.append(
            f"| {r['task']} | {r['method']} | {r['k']} | {r['n']} | {r['top_drop']:.3f} "
            f"| {r['random_drop']:.3f} | {r['top_wins']:.0%} | {r['ms_per_explanation']:.0f} | {delta} "
            f"| {r['foreign_cores']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=100, help="inputs per task")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3], help="words deleted")
    parser.add_argument("--draws", type=int, default=5, help="random deletions per k")
    parser.add_argument("--steps", type=int, default=32, help="ig interpolation steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "ner"], choices=sorted(RUNS))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the training subprocesses
    import torch

    from tunelab.evaluation.explanation_view import explanation_png
    from tunelab.io import atomic_write

    torch.set_num_threads(args.threads)
    prov = harness.provenance(threads=args.threads, with_files=True)
    OUT.mkdir(parents=True, exist_ok=True)
    rows, accuracy = [], {}
    for name in args.tasks:
        best, test_file = build_run(name)
        metrics = json.loads((best / "metrics.json").read_text())["dev"]
        accuracy[name] = metrics["accuracy" if name == "sentiment" else "f1"]
        found, example = faithfulness(name, best, test_file, args)
        rows += found
        if example:
            atomic_write(
                ROOT / "docs" / "img" / "explain_example.png", explanation_png(example["explanations"])
            )
            (OUT / "example.json").write_text(json.dumps(example, indent=2))
    (OUT / "results.json").write_text(json.dumps(rows, indent=2))
    harness.write_section(
        "explain", markdown(rows, args, prov, harness.source_state(with_files=True), accuracy)
    )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
