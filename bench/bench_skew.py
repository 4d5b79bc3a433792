"""Skewed and many-label data: tunelab full fine-tuning and LoRA against TF-IDF + logistic regression.

    OMP_NUM_THREADS=1 python bench/bench_skew.py [--seeds 42 7] [--runs bench/out/skew] [--reuse-only]

Two sets built from shipped data (``tunelab data prepare``, into the paths the examples read):

- ``rt-skewed``: Rotten Tomatoes with positives down-sampled to 10% of each split
  (``rotten-tomatoes-skewed``; examples ``skewed_rt.yaml`` / ``skewed_rt_lora.yaml``);
- ``chatterbot``: 19 intent categories, largest 209 train rows, smallest 5
  (``chatterbot``; examples ``intent_chatterbot.yaml`` / ``intent_chatterbot_lora.yaml``).

Each example is trained with ``task.params.class_weights`` none and balanced (and each ``--seeds``
seed) as a ``tunelab train`` subprocess; ``train.metric_for_best_model`` is left to tunelab (macro-F1 on
both sets, whose train labels are skewed). A run dir that already holds ``best/metrics.json`` is
reused, so an interrupted bench resumes; delete it to retrain. The reference is TF-IDF (uni+bigrams,
sublinear tf) + scikit-learn's LogisticRegression on the same train rows (tunelab's reader: dev split
off train), C chosen on the same dev rows by macro-F1, with class_weight None and balanced; the better
test macro-F1 of the two is the bar. Every figure is on the prepared test.csv. "never predicted" counts
the test labels the model assigns to no test row. Results go between the ``bench:skew`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import harness
from harness import ROOT

OUT = harness.OUT / "skew"
SETS: dict[str, dict[str, str]] = {
    "rt-skewed": {
        "asset": "rotten-tomatoes-skewed",
        "runs": "rt",
        "full": "skewed_rt.yaml",
        "lora": "skewed_rt_lora.yaml",
    },
    "chatterbot": {
        "asset": "chatterbot",
        "runs": "cb",
        "full": "intent_chatterbot.yaml",
        "lora": "intent_chatterbot_lora.yaml",
    },
}
WEIGHTS = ("none", "balanced")
SHORT = {"none": "none", "balanced": "bal"}  # run dir names: skew-<set>-<method>-<weights>-s<seed>
C_GRID = (0.1, 1.0, 10.0, 100.0)


def split_rows(example: Path, overrides: list[str] | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """(texts, labels) of train, dev and test exactly as a tunelab run of ``example`` reads them."""
    from tunelab.config import load_config
    from tunelab.training import resolve

    plan = resolve(load_config(example, overrides))
    data = plan.task.load_data(plan.cfg.data, plan.task_params, plan.cfg.train.seed)
    return {
        name: (split["text"], split["label"])
        for name, split in (("train", data.train), ("dev", data.dev), ("test", data.test))
    }


def tfidf_baseline(
    rows: dict[str, tuple[list[str], list[str]]], analyzer: str = "word"
) -> dict[str, dict[str, float]]:
    """Test accuracy / macro-F1 of TF-IDF + LogisticRegression per class_weight, C picked on dev.

    Uni+bigrams of words, or of characters with ``analyzer="char"`` (Chinese has no spaces).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform(rows["train"][0])
    x_dev, x_test = vectorizer.transform(rows["dev"][0]), vectorizer.transform(rows["test"][0])
    out = {}
    for weight in WEIGHTS:
        fitted = {
            c: LogisticRegression(C=c, class_weight=None if weight == "none" else weight, max_iter=5000).fit(
                x_train, rows["train"][1]
            )
            for c in C_GRID
        }
        dev_f1 = {c: f1_score(rows["dev"][1], m.predict(x_dev), average="macro") for c, m in fitted.items()}
        best = max(C_GRID, key=lambda c: dev_f1[c])
        pred = fitted[best].predict(x_test)
        out[weight] = {
            "C": best,
            "accuracy": float(accuracy_score(rows["test"][1], pred)),
            "macro_f1": float(f1_score(rows["test"][1], pred, average="macro")),
            "never_predicted": len(set(rows["test"][1]) - set(pred)),
        }
    return out


def train_row(
    example: Path, run_dir: Path, weights: str, seed: int, reuse_only: bool
) -> dict[str, Any] | None:
    """Train ``example`` once (unless ``run_dir`` already holds a finished run); its test figures.

    With ``reuse_only`` a run that has not finished is left out (None) instead of trained.
    """
    report = run_dir / "best" / "metrics.json"
    if not report.is_file() and reuse_only:
        return None
    if not report.is_file():
        cmd = [
            sys.executable,
            "-m",
            "tunelab.cli",
            "train",
            str(example),
            "--overwrite",
            "--train.output_dir",
            str(run_dir),
            "--task.params.class_weights",
            weights,
            "--train.seed",
            str(seed),
        ]
        harness.require_ok(
            harness.run(cmd, run_dir.with_suffix(".log"), env=harness.child_env()), run_dir.name
        )
    metrics = json.loads(report.read_text())
    test = metrics["test"]
    matrix = test["confusion_matrix"]
    present = [i for i, row in enumerate(matrix) if sum(row)]
    never = [i for i in present if not sum(row[i] for row in matrix)]
    return {
        "weights": weights,
        "seed": seed,
        "accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
        "dev_macro_f1": metrics["dev"]["macro_f1"],
        "never_predicted": len(never),
        "test_labels": len(present),
    }


def bench(seeds: list[int], runs: Path, reuse_only: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, spec in SETS.items():
        data = ROOT / "data" / spec["asset"]
        if not (data / "train.csv").is_file():
            cmd = [sys.executable, "-m", "tunelab.cli", "data", "prepare", spec["asset"], str(data)]
            harness.require_ok(harness.run(cmd, OUT / f"prepare-{name}.log", env=harness.child_env()), name)
        rows = split_rows(ROOT / "examples" / spec["full"])
        entry: dict[str, Any] = {
            "rows": {split: len(texts) for split, (texts, _) in rows.items()},
            "tfidf": tfidf_baseline(rows),
        }
        for method in ("full", "lora"):
            rows_of_method = (
                train_row(
                    ROOT / "examples" / spec[method],
                    runs / f"skew-{spec['runs']}-{method}-{SHORT[w]}-s{seed}",
                    w,
                    seed,
                    reuse_only,
                )
                for w in WEIGHTS
                for seed in seeds
            )
            entry[method] = [row for row in rows_of_method if row is not None]
        result[name] = entry
    return result


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.mean(row[key] for row in rows)


def markdown(result: dict[str, Any], prov: dict[str, Any]) -> str:
    lines = [
        "## Skewed and many-label data (MiniLM, full fine-tuning and LoRA vs TF-IDF + LR)",
        "",
        *harness.provenance_lines(prov),
        "",
        "Test = the prepared test.csv of each set. tunelab rows: the example as shipped, with "
        "`--task.params.class_weights` none / balanced, best/ selected on dev macro-F1 (tunelab's choice "
        "on skewed train labels); LoRA r 8, alpha 16, on query/key/value/attention output/FFN, lr 1e-3. "
        "TF-IDF + LR: uni+bigrams, C on dev macro-F1 from "
        f"{', '.join(map(str, C_GRID))}; the bar is the better of its two class weights.",
    ]
    for name, entry in result.items():
        tfidf = entry["tfidf"]
        bar = max(row["macro_f1"] for row in tfidf.values())
        lines += [
            "",
            f"**{name}** ({entry['rows']['train']} train / {entry['rows']['dev']} dev / "
            f"{entry['rows']['test']} test rows); bar: test macro-F1 {bar:.3f}",
            "",
            "| model | class weights | seeds | test macro-F1 (per seed) | mean | test accuracy (mean) "
            "| labels never predicted | vs bar |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for weight, row in tfidf.items():
            f1 = row["macro_f1"]
            lines.append(
                f"| TF-IDF + LR (C {row['C']:g}) | {weight} | - | {f1:.3f} | {f1:.3f} "
                f"| {row['accuracy']:.3f} | {row['never_predicted']} | {f1 - bar:+.3f} |"
            )
        for method in ("full", "lora"):
            for weight in WEIGHTS:
                runs = [row for row in entry[method] if row["weights"] == weight]
                if not runs:
                    continue
                mean = _mean(runs, "macro_f1")
                seeds = ", ".join(str(r["seed"]) for r in runs)
                per_seed = " / ".join(f"{r['macro_f1']:.3f}" for r in runs)
                never = " / ".join(str(r["never_predicted"]) for r in runs) + f" of {runs[0]['test_labels']}"
                lines.append(
                    f"| tunelab {method} | {weight} | {seeds} | {per_seed} | {mean:.3f} "
                    f"| {_mean(runs, 'accuracy'):.3f} | {never} | {mean - bar:+.3f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7], help="training seeds per row")
    parser.add_argument("--runs", type=Path, default=OUT, help="where run dirs go (finished ones are reused)")
    parser.add_argument("--reuse-only", action="store_true", help="leave out unfinished runs; train none")
    args = parser.parse_args()
    os.chdir(ROOT)  # the examples' data paths are relative to the repository
    prov = harness.provenance()
    OUT.mkdir(parents=True, exist_ok=True)
    result = bench(args.seeds, args.runs, args.reuse_only)
    (OUT / "results.json").write_text(json.dumps(result, indent=2))
    harness.write_section("skew", markdown(result, prov))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
