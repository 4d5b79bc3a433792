"""Self-training on Rotten Tomatoes: 200 labelled rows + an unlabelled pool, against supervised baselines.

Per seed, from the shipped split's train.csv (``tunelab data prepare rotten-tomatoes``): 200 labelled
rows (100 per label, seeded), an unlabelled pool of ``--pool`` other train rows (their labels are
dropped from the file the method reads) and 100 further rows as the dev file. Every row scores its
FINAL model; the dev file only picks each run's ``best/`` (scored each epoch), which a later row takes as
its fixed teacher. Rows, each a MiniLM ``classification`` run in its own process
(``harness.run_worker``), kept in ``OUT/runs/<row>-s<seed>``, all scored on the same seeded ``--test``
rows of test.csv:

- ``supervised-200``: the 200 labelled rows, ``full`` method.
- ``self-train``: the 200 labelled rows + ``self_train`` on the pool, teacher = supervised-200's best/
  (``VARIANTS``: the params of examples/sentiment_self_train.yaml); the student starts from MiniLM.
- ``self-train-r2``: the same, teacher = self-train's best/ (a second round).
- ``full-data``: the 200 rows + the pool *with* its gold labels: the ceiling self-training approaches.

A row whose teacher is another row runs after it (``--rows supervised-200,self-train,self-train-r2``
keeps that order with ``--parallel`` 1 per seed; run the stages as separate invocations otherwise).
The 200-row runs take ``EPOCHS_200`` epochs (the same optimizer steps with or without the pool); the
full-data run takes ``EPOCHS_FULL`` epochs of its rows. train s is the loop's wall time, kept the mean
share of unlabelled rows whose pseudo-label passed the threshold.

    flock -x /tmp/tunelab-cpu.lock python bench/bench_self_train.py --seeds 1,2

On a shared machine the rows can run at once (``--parallel N``), and an invocation that was stopped
leaves each finished worker's result beside its log; ``--reuse`` takes those instead of running the
row again, ``--collect`` renders only them (their process measures then read n/r).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness

OUT = harness.OUT / "self_train"
LABELLED = 100  # rows per label
DEV = 100
MAX_LENGTH = 64
BATCH = 16
EPOCHS_200 = 10
EPOCHS_FULL = 1
SOFT: dict[str, Any] = {"temperature": 2.0, "threshold": 0.0}  # examples/sentiment_self_train.yaml's
VARIANTS: dict[str, dict[str, Any]] = {  # params beside unlabeled_file; teacher_run names a row of this seed
    "self-train": {"teacher_run": "supervised-200"} | SOFT,
    "self-train-r2": {"teacher_run": "self-train"} | SOFT,
}


def self_train_defaults() -> dict[str, Any]:
    """The method's default params that the bench's variants change."""
    from tunelab.methods.self_train import Params

    defaults = Params(unlabeled_file=Path("-")).model_dump(mode="json")
    return {k: defaults[k] for k in ("threshold", "temperature", "class_fraction", "weight", "ratio")}


def write_rows(path: Path, rows: list[tuple[str, str]], labelled: bool = True) -> Path:
    """A CSV of (text, label) rows, or of the text column alone."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"] if labelled else ["text"])
        writer.writerows(rows if labelled else [(text,) for text, _ in rows])
    return path


def split_files(data_dir: Path, seed: int, pool: int) -> dict[str, Path]:
    """Seeded labelled / unlabelled / dev / full-data files of one seed, under OUT/seed-N."""
    with open(data_dir / "train.csv", encoding="utf-8", newline="") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    rng = random.Random(seed)
    rng.shuffle(rows)
    labelled: list[tuple[str, str]] = []
    rest: list[tuple[str, str]] = []
    taken: Counter[str] = Counter()
    for row in rows:
        (labelled if taken[row[1]] < LABELLED else rest).append(row)
        taken[row[1]] += 1
    out = OUT / f"seed-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    unlabelled = rest[:pool]
    return {
        "labelled": write_rows(out / "labelled.csv", labelled),
        "unlabelled": write_rows(out / "unlabelled.csv", unlabelled, labelled=False),
        "dev": write_rows(out / "dev.csv", rest[pool : pool + DEV]),
        "full": write_rows(out / "full.csv", labelled + unlabelled),
    }


def run_config(row: str, seed: int, files: dict[str, str], test: Path, n_test: int, out: Path) -> Any:
    """The validated tunelab config of one bench row."""
    from tunelab.config import validate_config

    methods: list[dict[str, Any]] = [{"name": "full"}]
    if row in VARIANTS:
        params = {"unlabeled_file": files["unlabelled"], **VARIANTS[row]}
        if "teacher_run" in params:
            params["teacher_run"] = str(run_dir(params["teacher_run"], seed))
        methods = [{"name": "self_train", "params": params}]
    return validate_config(
        {
            "model": {"name_or_path": "minilm-l6"},
            "data": {
                "train_file": files["full"] if row == "full-data" else files["labelled"],
                "dev_file": files["dev"],
                "test_file": str(test),
                "max_eval_samples": n_test,
            },
            "task": {"name": "classification", "params": {"max_length": MAX_LENGTH}},
            "methods": methods,
            "train": {
                "output_dir": str(out),
                "seed": seed,
                "lr": 1e-4,
                "batch_size": BATCH,
                "warmup_ratio": 0.1,
                "num_train_epochs": EPOCHS_FULL if row == "full-data" else EPOCHS_200,
                "save_steps": 100000,
                "logging_steps": 5,
                "eval_batch_size": 64,
            },
        }
    )


def run_dir(row: str, seed: int) -> Path:
    """Where a row's run lives (its best/ is a later row's teacher); kept between invocations."""
    return OUT / "runs" / f"{row}-s{seed}"


def worker(row: str, seed: int, files: dict[str, str], a: argparse.Namespace) -> dict[str, Any]:
    """Train one row, keep its dev-best model in best/, and score its final model on the test rows."""
    import shutil
    from functools import partial

    import torch

    from tunelab.evaluation import evaluate
    from tunelab.models.artifact import save_model
    from tunelab.training import build_accelerator, prepare_inputs, resolve, train
    from tunelab.workflows import run_info

    torch.set_num_threads(a.threads)
    out = run_dir(row, seed)
    shutil.rmtree(out, ignore_errors=True)
    plan = resolve(run_config(row, seed, files, a.data_dir / "test.csv", a.test, out))
    accelerator = build_accelerator(plan.cfg.train)
    inputs = prepare_inputs(plan)
    info = run_info(plan, inputs)
    score = partial(
        evaluate,
        task=plan.task,
        collator=inputs.collator,
        labels=inputs.labels,
        batch_size=plan.cfg.train.eval_batch_size,
        params=inputs.task_params,
    )

    def on_best(model: Any, metrics: dict[str, Any], step: int) -> None:
        record = info.model_copy(update={"step": step, "dev_metrics": dict(metrics)})
        save_model(model, inputs.tokenizer, out / "best", record)

    t0 = time.perf_counter()
    result = train(plan, inputs, accelerator, partial(score, features=inputs.dev), on_best)
    train_s = time.perf_counter() - t0
    assert inputs.test is not None
    metrics = score(inputs.adapted.model, features=inputs.test)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kept = [r["train/self_train_kept"] for r in logged if "train/self_train_kept" in r]
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n_train": len(inputs.train),
        "n_test": len(inputs.test),
        "steps": result.step,
        "best_step": result.best_step,
        "train_s": train_s,
        "kept": statistics.mean(kept) if kept else None,
    }


def _figure(value: float | None, spec: str) -> str:
    """A process measure, or "n/r" for a row reused from an earlier invocation (not recorded)."""
    return "n/r" if value is None else format(value, spec)


def render(results: list[dict[str, Any]], prov: dict[str, Any], a: argparse.Namespace) -> str:
    """The RESULTS section: per-seed rows and the mean of each row kind."""
    lines = [
        *harness.provenance_lines(prov, harness.source_state(with_files=True)),
        f"- {harness.CONTENTION_NOTE}"
        + (f"; {a.parallel} workers ran at once, each counts the others" if a.parallel > 1 else ""),
        *(
            [
                "- n/r: the row's worker finished under an earlier invocation of this script (`--reuse` / "
                "`--collect` took its result); its peak RSS and the other cores meanwhile were not recorded, "
                "train s is the worker's own (the loop's wall time)"
            ]
            if any(r["peak_rss_mb"] is None for r in results)
            else []
        ),
        "",
        f"Rotten Tomatoes, MiniLM (full fine-tune, lr 1e-4, batch {BATCH}, max_length {MAX_LENGTH}), final "
        f"model scored on {a.test} seeded test.csv rows. 200 labelled rows = {LABELLED} per label drawn "
        f"with the seed from train.csv; unlabelled pool = {a.pool} other train rows (labels dropped); "
        f"full-data = those 200 + the pool with gold labels (capped at {a.pool + 2 * LABELLED} rows). "
        f"200-row runs: {EPOCHS_200} epochs; full-data: {EPOCHS_FULL}. self_train params beside the "
        "unlabelled file: "
        + "; ".join(
            f"{row} `{json.dumps(VARIANTS[row])}`" for row in VARIANTS if row in {r["row"] for r in results}
        )
        + " (teacher_run: that row's run of the same seed, its dev-best best/ (dev: 100 rows, scored each "
        "epoch); the student starts from MiniLM; other params: the method's defaults, "
        f"`{json.dumps(self_train_defaults())}`). kept = share of unlabelled rows whose pseudo-label "
        "was kept (threshold and class quota), mean over the logged steps. best step = the step of the "
        "run's best/ (the next row's teacher); the test accuracy is the final model's.",
        "",
        "| row | seed | labelled rows | test accuracy | test macro-F1 | steps | best step | kept | train s | "
        "peak RSS (MB) | other cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        kept = f"{r['kept']:.2f}" if r["kept"] is not None else "-"
        lines.append(
            f"| {r['row']} | {r['seed']} | {r['n_train']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
            f"| {r['steps']} | {r['best_step']} | {kept} | {r['train_s']:.0f} "
            f"| {_figure(r['peak_rss_mb'], '.0f')} | {_figure(r['foreign_cores'], '.2f')} |"
        )
    for row in dict.fromkeys(r["row"] for r in results):
        mine = [r for r in results if r["row"] == row]
        acc = [r["accuracy"] for r in mine]
        spread = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        lines.append(
            f"| **{row}** | mean of {len(mine)} | | **{statistics.mean(acc):.3f}**{spread} "
            f"| {statistics.mean(r['macro_f1'] for r in mine):.3f} | | | | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="1,2", help="comma-separated seeds")
    parser.add_argument("--rows", default="supervised-200,self-train,full-data", help="comma-separated rows")
    parser.add_argument(
        "--full-seeds",
        type=lambda text: {int(x) for x in text.split(",")},
        help="seeds of the full-data row (default: every seed)",
    )
    parser.add_argument("--pool", type=int, default=3000, help="unlabelled rows")
    parser.add_argument("--test", type=int, default=1000, help="test rows scored")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=1, help="workers run at once (each --threads)")
    parser.add_argument("--data-dir", type=Path, default=OUT / "data")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take rows whose worker already finished (its .out.json) as they are",
    )
    parser.add_argument(
        "--collect", action="store_true", help="render the rows whose worker already finished; run nothing"
    )
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        row, seed, files = json.loads(a.worker)
        print(json.dumps(worker(row, seed, files, a)))  # noqa: T201  (the parent reads stdout)
        return
    from tunelab.assets import prepare_dataset

    if not (a.data_dir / "train.csv").is_file():
        prepare_dataset("rotten-tomatoes", a.data_dir)
    prov = harness.provenance(threads=a.threads, with_files=True)
    args = [x for x in sys.argv[1:] if x not in ("--no-write", "--reuse", "--collect")]
    jobs = []
    for seed in (int(s) for s in a.seeds.split(",")):
        files = {k: str(v) for k, v in split_files(a.data_dir, seed, a.pool).items()}
        rows = [
            r for r in a.rows.split(",") if r != "full-data" or a.full_seeds is None or seed in a.full_seeds
        ]
        jobs += [(row, seed, files) for row in rows]

    def measured(job: tuple[str, int, dict[str, str]]) -> dict[str, Any] | None:
        row, seed, files = job
        log = OUT / f"{row}-s{seed}.log"
        done = log.with_suffix(".out.json")
        if (a.reuse or a.collect) and done.is_file() and done.read_text(encoding="utf-8").strip():
            # a worker of an earlier invocation that finished: its own figures, no process measures
            lines = done.read_text(encoding="utf-8").strip().splitlines()
            unmeasured = {"wall_s": None, "peak_rss_mb": None, "foreign_cores": None}
            return {"row": row, "seed": seed} | json.loads(lines[-1]) | unmeasured
        if a.collect:
            return None
        cmd = [sys.executable, __file__, *args, "--worker", json.dumps([row, seed, files])]
        result = {"row": row, "seed": seed} | harness.run_worker(cmd, log, f"{row} {seed}")
        print(
            f"{row} seed {seed}: accuracy {result['accuracy']:.3f} ({result['wall_s']:.0f} s)",
            file=sys.stderr,
        )  # noqa: T201
        return result

    with ThreadPoolExecutor(a.parallel) as pool:
        results = [r for r in pool.map(measured, jobs) if r is not None]
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    markdown = render(results, prov, a)
    if not a.no_write:
        harness.write_section("self-train", markdown)
    print(markdown)  # noqa: T201


if __name__ == "__main__":
    main()
