"""How right a 200-row teacher's pseudo-labels are, by selection rule, as its training goes on.

Trains the ``supervised-200`` row of ``bench_self_train.py`` (same seeded files: run that script once
first) with the dev file scored every 13 steps, and at each of those points labels ``POOL`` gold-labelled
pool rows with the model: the share above each fixed threshold with its accuracy (kept share, accuracy),
and the accuracy of a class-balanced selection keeping the top fraction q of the rows per predicted
class (``top<q>``, q x rows / classes rows of each class, the most confident first). Prints one JSON
line per evaluation; nothing is written to RESULTS.md (the figures are quoted there by hand).

    OMP_NUM_THREADS=1 PYTHONPATH=src:bench python bench/probe_self_train.py SEED POOL
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import bench_self_train as bench
from tunelab.config import validate_config
from tunelab.evaluation import evaluate
from tunelab.training import build_accelerator, prepare_inputs, resolve, train

THRESHOLDS = (0.9, 0.95, 0.98, 0.99)
FRACTIONS = (0.1, 0.2, 0.3, 0.5)


def selection_quality(logits: torch.Tensor, gold: torch.Tensor) -> dict[str, Any]:
    """Pseudo-label accuracy of the fixed thresholds and of the class-balanced top fractions."""
    confidence, pred = logits.softmax(-1).max(-1)
    right = (pred == gold).float()
    out: dict[str, Any] = {"pool_acc": right.mean().item(), "pred_share_1": pred.float().mean().item()}
    for t in THRESHOLDS:
        kept = confidence > t
        out[f"t{t}"] = (
            round(kept.float().mean().item(), 3),
            right[kept].mean().item() if kept.any() else None,
        )
    classes = logits.shape[-1]
    for q in FRACTIONS:
        kept = torch.zeros_like(right, dtype=torch.bool)
        for c in range(classes):
            rows = (pred == c).nonzero().flatten()
            kept[rows[confidence[rows].argsort(descending=True)[: int(q * len(gold) / classes)]]] = True
        out[f"top{q}"] = round(right[kept].mean().item(), 3)
    return out


def main() -> None:
    seed, n_pool = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    files = bench.OUT / f"seed-{seed}"
    with open(files / "full.csv", encoding="utf-8", newline="") as fh:  # the pool with its gold labels
        rows = list(csv.DictReader(fh))[2 * bench.LABELLED : 2 * bench.LABELLED + n_pool]
    work = Path(tempfile.mkdtemp())
    pool = bench.write_rows(work / "pool.csv", [(r["text"], r["label"]) for r in rows])
    cfg = validate_config(
        {
            "model": {"name_or_path": "minilm-l6"},
            "data": {
                "train_file": str(files / "labelled.csv"),
                "dev_file": str(files / "dev.csv"),
                "test_file": str(pool),
            },
            "task": {"name": "classification", "params": {"max_length": bench.MAX_LENGTH}},
            "methods": [{"name": "full"}],
            "train": {
                "output_dir": str(work / "run"),
                "seed": seed,
                "lr": 1e-4,
                "batch_size": bench.BATCH,
                "warmup_ratio": 0.1,
                "num_train_epochs": bench.EPOCHS_200,
                "save_steps": 100000,
                "eval_steps": 13,
                "eval_batch_size": 64,
            },
        }
    )
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    assert inputs.test is not None
    pool_rows = inputs.test
    gold = torch.tensor(pool_rows["labels"])

    def scored(model: torch.nn.Module) -> dict[str, Any]:
        dev = evaluate(
            model, plan.task, inputs.dev, inputs.collator, inputs.labels, 64, params=inputs.task_params
        )
        model.eval()
        with torch.no_grad():
            logits = torch.cat(
                [
                    model(
                        **{
                            k: v
                            for k, v in inputs.collator(
                                pool_rows.select(range(i, min(i + 64, len(gold))))
                            ).items()
                            if k != "labels"
                        }
                    ).logits
                    for i in range(0, len(gold), 64)
                ]
            )
        model.train()
        return dev | {"pool": selection_quality(logits.float(), gold)}

    def report(metrics: dict[str, Any], step: int) -> bool:
        print(json.dumps({"step": step, "dev_acc": metrics["accuracy"], **metrics["pool"]}), flush=True)  # noqa: T201
        return False

    train(plan, inputs, build_accelerator(cfg.train), evaluate=scored, on_eval=report)


if __name__ == "__main__":
    main()
