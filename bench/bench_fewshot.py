"""Few-shot and zero-shot accuracy vs K on Rotten Tomatoes and BBC News, against a full-data fine-tune.

Rows per dataset, each run in its own process (``harness.run_worker``: peak RSS from ``os.wait4`` is its
own, with the cores other processes used meanwhile), all scored on the same seeded test subset:

- K=0 ``lm-prompt``: SmolLM2-135M-Instruct scores each label's verbalizer after a prompt
  (``prompt_classification``, no training).
- K=0 ``embed-sim``: cosine between the MiniLM embedding of the text and of each label description
  (``embedding_classification``, no training).
- K>0 ``pet-lora``: ``prompt_classification`` trained PET-style on K rows per label (LoRA r=8).
- K>0 ``setfit``: ``embedding_classification`` trained SetFit-style (contrastive pairs + head).
- ``finetune``: MiniLM ``classification`` (fresh head, ``full`` method), one epoch on
  ``SIZES[...]["full_rows"]`` train rows (a seeded subset when smaller than the split).

K rows are drawn by ``data.k_shot`` with the run's seed; K-shot figures are means over the seeds in
``SIZES``. Training runs a fixed number of optimizer steps (``pet_steps``; 30 for SetFit), so every K
gets the same compute. SIZES is set by what 2 CPU cores afford in ~20 minutes: SmolLM2 reads each
prompt once and scores the C labels from it (``shared_prefix``), plus the content-free prompts of
contextual calibration in every batch, so its test subsets and text lengths are still small.
train s is the loop's wall time (model load and tokenisation excluded), eval s the test scoring;
majority is the share of the most frequent label on the same test rows.

    flock -x /tmp/tunelab-cpu.lock python bench/bench_fewshot.py --out bench/out/fewshot.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness
from harness import ROOT

DATASETS: dict[str, dict[str, Any]] = {
    "rt": {
        "asset": "rotten-tomatoes",
        # completion prompts, as the examples: on SmolLM2-135M they beat chat-style questions (README)
        "prompt": {"template": "Review: {text}\nSentiment:", "chat_template": False},
        "descriptions": {
            "positive": "This movie review is positive.",
            "negative": "This movie review is negative.",
        },
    },
    "bbc": {
        "asset": "bbc-news",
        "prompt": {
            "template": "{text}\nThis article appeared in the BBC News section:",
            "chat_template": False,
        },
        "descriptions": {
            name: f"This news article is about {name}."
            for name in ("business", "entertainment", "politics", "sports", "tech")
        },
    },
}
# What each dataset's rows cost on 2 CPU cores decides these sizes (SmolLM2 scores C sequences per text):
# test rows, encoder / LM text tokens, K values per approach, seeds, SetFit pairs per row, full-data rows.
SIZES: dict[str, dict[str, Any]] = {
    "rt": {
        "eval": 200,
        "max_length": 64,
        "lm_max_length": 64,
        "setfit_ks": (8, 16, 64),
        "pet_ks": (8, 16, 64),
        "setfit_seeds": 2,
        "pet_seeds": 1,
        "pairs": 2,
        "setfit_batch": 16,
        "pet_steps": 20,
        "full_rows": 2000,
    },
    "bbc": {
        "eval": 100,
        "max_length": 128,
        "lm_max_length": 64,
        "setfit_ks": (8, 16, 64),
        "pet_ks": (8, 16, 64),  # each text is 5 sequences of ~105 tokens: ~4 min a run on one core
        "setfit_seeds": 1,
        "pet_seeds": 1,
        "pairs": 1,
        "setfit_batch": 8,
        "pet_steps": 10,
        "full_rows": 500,
    },
}


# ``--small``: what fits ~30 minutes on a machine shared with other jobs (smaller test sets, fewer K/seeds).
SMALL: dict[str, dict[str, Any]] = {
    "rt": {"eval": 100, "pet_ks": (8,), "setfit_seeds": 1, "full_rows": 1000},
    "bbc": {"eval": 50, "setfit_ks": (8, 16), "pet_ks": (), "full_rows": 300},
}


def sizes(dataset: str, small: bool) -> dict[str, Any]:
    """The dataset's bench sizes, with the ``--small`` overrides when asked."""
    return SIZES[dataset] | (SMALL[dataset] if small else {})


def run_config(
    dataset: str, approach: str, k: int | None, seed: int, out: Path, a: argparse.Namespace
) -> Any:
    """The validated tunelab config of one bench row."""
    from tunelab.config import validate_config

    spec, size = DATASETS[dataset], sizes(dataset, a.small)
    data_dir = prepared(dataset, a.data_root)
    data: dict[str, Any] = {
        "train_file": str(data_dir / "train.csv"),
        "test_file": str(data_dir / "test.csv"),
        "max_eval_samples": size["eval"],
        "dev_ratio": 0.05,
    }
    data |= {"k_shot": k} if k is not None else {"max_train_samples": size["full_rows"]}
    train: dict[str, Any] = {
        "output_dir": str(out),
        "seed": seed,
        "save_steps": 100000,
        "logging_steps": 1000,
    }
    methods: list[dict[str, Any]] = [{"name": "full"}]
    if approach in ("lm-prompt", "pet-lora"):
        model = "smollm2-135m-instruct"
        params = spec["prompt"] | {"max_length": size["lm_max_length"], "shared_prefix": True}
        task = {"name": "prompt_classification", "params": params}
        methods = [{"name": "lora", "params": {"r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0}}]
        train |= {"lr": 5e-4, "batch_size": 4, "max_steps": size["pet_steps"], "eval_batch_size": 4}
    elif approach in ("embed-sim", "setfit"):
        model = "minilm-l6"
        params = {
            "descriptions": spec["descriptions"],
            "max_length": size["max_length"],
            "pairs_per_example": size["pairs"],
            "head_lr_multiplier": 200.0,
        }
        task = {"name": "embedding_classification", "params": params}
        train |= {"lr": 5e-5, "batch_size": size["setfit_batch"], "max_steps": 30, "eval_batch_size": 32}
    else:
        model = "minilm-l6"
        task = {"name": "classification", "params": {"max_length": size["max_length"]}}
        train |= {"lr": 1e-4, "batch_size": 16, "num_train_epochs": 1, "eval_batch_size": 32}
    return validate_config(
        {"model": {"name_or_path": model}, "data": data, "task": task, "methods": methods, "train": train}
    )


def worker(dataset: str, approach: str, k: int | None, seed: int, a: argparse.Namespace) -> dict[str, Any]:
    """Train (unless K=0) and score the test subset; the row's figures."""
    import torch

    from tunelab.evaluation import evaluate
    from tunelab.training import build_accelerator, prepare_inputs, resolve, train

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        plan = resolve(run_config(dataset, approach, k, seed, Path(tmp) / "run", a))
        accelerator = build_accelerator(plan.cfg.train)
        inputs = prepare_inputs(plan)
        n_train = len(inputs.train)
        t0 = time.perf_counter()
        if k != 0:
            train(plan, inputs, accelerator)
        train_s = time.perf_counter() - t0
        assert inputs.test is not None
        t0 = time.perf_counter()
        metrics = evaluate(
            inputs.adapted.model,
            plan.task,
            inputs.test,
            inputs.collator,
            inputs.labels,
            plan.cfg.train.eval_batch_size,
            params=inputs.task_params,
        )
        eval_s = time.perf_counter() - t0
        counts = Counter(inputs.test["labels"])
    return {
        "majority": max(counts.values()) / len(inputs.test),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n_train": n_train,
        "n_test": len(inputs.test),
        "train_s": train_s,
        "eval_s": eval_s,
    }


def prepared(dataset: str, root: Path) -> Path:
    """The dataset's CSVs (tunelab data prepare), made once under ``root``."""
    from tunelab.assets import prepare_dataset

    out = root / DATASETS[dataset]["asset"]
    if not (out / "train.csv").is_file():
        prepare_dataset(DATASETS[dataset]["asset"], out)
    return out


def plan_rows(datasets: list[str], small: bool) -> list[tuple[str, str, int | None, int]]:
    """(dataset, approach, K, seed) of every run, K=None meaning the full-data fine-tune."""
    rows: list[tuple[str, str, int | None, int]] = []
    for dataset in datasets:
        size = sizes(dataset, small)
        rows.append((dataset, "embed-sim", 0, 1))
        for k in size["setfit_ks"]:
            rows += [(dataset, "setfit", k, seed) for seed in range(1, size["setfit_seeds"] + 1)]
        rows.append((dataset, "finetune", None, 1))
        rows.append((dataset, "lm-prompt", 0, 1))  # the causal-LM rows last: they cost the most
        for k in size["pet_ks"]:
            rows += [(dataset, "pet-lora", k, seed) for seed in range(1, size["pet_seeds"] + 1)]
    return rows


def render(results: list[dict[str, Any]], prov: dict[str, Any], code_after: dict[str, Any]) -> str:
    """Markdown table: one line per (dataset, approach, K), means over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(
            (r["dataset"], r["approach"], "full" if r["k"] is None else str(r["k"])), []
        ).append(r)
    lines = [
        *harness.provenance_lines(prov, code_after),
        f"- {harness.CONTENTION_NOTE} (the most over a row's seeds)",
        "",
        "| dataset | K | approach | seeds | train rows | test rows | accuracy | macro-F1 | train s | eval s "
        "| majority | peak RSS (MB) | other cores |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (dataset, approach, k), runs in groups.items():
        acc = [r["accuracy"] for r in runs]
        spread = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        lines.append(
            f"| {dataset} | {k} | {approach} | {len(runs)} | {runs[0]['n_train']} | {runs[0]['n_test']} "
            f"| {statistics.mean(acc):.3f}{spread} | {statistics.mean(r['macro_f1'] for r in runs):.3f} "
            f"| {statistics.mean(r['train_s'] for r in runs):.0f} "
            f"| {statistics.mean(r['eval_s'] for r in runs):.0f} | {runs[0]['majority']:.3f} "
            f"| {max(r['peak_rss_mb'] for r in runs):.0f} | {max(r['foreign_cores'] for r in runs):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="rt,bbc", help="comma-separated: rt, bbc")
    parser.add_argument("--small", action="store_true", help="the SMALL sizes (a shared machine)")
    parser.add_argument(
        "--approaches", default="embed-sim,setfit,finetune,lm-prompt,pet-lora", help="comma-separated rows"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=harness.OUT / "fewshot.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        dataset, approach, k, seed = json.loads(a.worker)
        print(json.dumps(worker(dataset, approach, k, seed, a)))  # noqa: T201  (the parent reads stdout)
        return
    results = []
    args = sys.argv[1:]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    prov = harness.provenance(threads=a.threads, with_files=True)
    wanted = set(a.approaches.split(","))
    for dataset, approach, k, seed in plan_rows(a.datasets.split(","), a.small):
        if approach not in wanted:
            continue
        name = f"{dataset}/{approach}/K={k}/seed {seed}"
        cmd = [sys.executable, __file__, *args, "--worker", json.dumps([dataset, approach, k, seed])]
        log = harness.OUT / "fewshot" / f"{dataset}-{approach}-k{k}-s{seed}.log"
        row = {"dataset": dataset, "approach": approach, "k": k, "seed": seed}
        row |= harness.run_worker(cmd, log, name)
        results.append(row)
        print(f"{name}: accuracy {row['accuracy']:.3f} ({row['wall_s']:.0f} s)", file=sys.stderr)  # noqa: T201
        a.out.write_text(json.dumps(results, indent=2))
    print(render(results, prov, harness.source_state(with_files=True)))  # noqa: T201


if __name__ == "__main__":
    main()
