"""Adaptation methods side by side on one dataset: trainable params, samples/s, peak RSS, dev metric.

Variants (each in its own process, ``harness.run_worker``, so peak RSS is its own): tunelab ``full``,
``freeze`` head-only (``trainable_layers: 0``), ``lora``, ``ia3``, ``prefix_tuning``, and plain peft +
``transformers.Trainer`` LoRA with the same LoRA config, rows, tokenisation and hyperparameters. A
variant tunelab refuses at validation is recorded with its reason. Rows come from tunelab's data
layer, so every variant sees the same train/dev split.

    flock -x /tmp/tunelab-cpu.lock python bench/bench_methods.py --datasets rt --out bench/methods.json

``--datasets rt,wnut16``: WNUT-16 (entity F1, 3 epochs) runs the same variants through
``token_classification``.
samples/s is the loop's own figure over the whole run (tunelab: the training-only time it logs; HF:
``train_samples_per_second``); the dev metric is computed after training, outside the timing. Each
row also shows the cores other processes used while it ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness
from harness import BENCH, ROOT

# query/value: the LoRA these figures were measured with (peft's BERT default, tunelab's before issue 17);
# the sweep that moved tunelab's default to every encoder linear is bench/bench_peft_sweep.py.
LORA = {"r": 8, "lora_alpha": 16.0, "lora_dropout": 0.1, "target_modules": ["query", "value"]}
# method name, methods list, learning rate: small-parameter methods need larger rates (peft's guides).
VARIANTS: dict[str, tuple[list[dict[str, Any]], float]] = {
    "full": ([{"name": "full"}], 1e-4),
    "head-only": ([{"name": "freeze", "params": {"trainable_layers": 0}}], 2e-3),
    "lora": ([{"name": "lora", "params": LORA}], 5e-4),
    "ia3": ([{"name": "ia3"}], 3e-3),
    "prefix": ([{"name": "prefix_tuning", "params": {"num_virtual_tokens": 20}}], 5e-3),
}
# WNUT-16 trains 3 epochs: after one, every variant is still near the token-frequency baseline. Its
# ``lr`` entries override VARIANTS' rates: LoRA at 5e-4 still tagged every token O after 3 epochs
# (entity F1 0.0, tunelab and plain peft alike; measured 2026-11-25), so it gets 2e-3.
DATASETS = {
    "rt": {
        "asset": "rotten-tomatoes",
        "train_file": "train.csv",
        "task": {"name": "classification", "params": {"max_length": 64}},
        "metric": "accuracy",
        "epochs": 1,
    },
    "wnut16": {
        "asset": "wnut16",
        "train_file": "train.conll",
        "task": {"name": "token_classification", "params": {"max_length": 64}},
        "metric": "f1",
        "epochs": 3,
        "lr": {"lora": 2e-3},
    },
}


def variant_lr(dataset: str, variant: str) -> float:
    """The variant's learning rate from VARIANTS, unless the dataset overrides it."""
    return DATASETS[dataset].get("lr", {}).get(variant, VARIANTS[variant][1])


def config(dataset: str, data_dir: Path, out: Path, methods: list[dict], lr: float, a: argparse.Namespace):
    """The tunelab config of one variant (validated, not resolved)."""
    from tunelab.config import validate_config

    spec = DATASETS[dataset]
    return validate_config(
        {
            "model": {"name_or_path": "minilm-l6"},
            "data": {
                "train_file": str(data_dir / spec["train_file"]),
                "dev_ratio": 0.1,
                "max_train_samples": a.train_rows,
                "max_eval_samples": a.eval_rows,
            },
            "task": spec["task"],
            "methods": methods,
            "train": {
                "output_dir": str(out),
                "num_train_epochs": spec["epochs"],
                "batch_size": 32,
                "lr": lr,
                "warmup_ratio": 0.1,
                "logging_steps": 100_000,  # one logged window: the whole run
                "save_steps": 100_000,
                "seed": 42,
            },
        }
    )


def tunelab_worker(dataset: str, variant: str, data_dir: Path, a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tunelab.errors import ConfigError
    from tunelab.evaluation import evaluate
    from tunelab.training import build_accelerator, prepare_inputs, resolve, train
    from tunelab.training.tracking import read_history

    torch.set_num_threads(a.threads)
    methods, lr = VARIANTS[variant][0], variant_lr(dataset, variant)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            plan = resolve(config(dataset, data_dir, Path(tmp) / "run", methods, lr, a))
        except ConfigError as exc:
            return {"refused": str(exc).splitlines()[-1]}
        accelerator = build_accelerator(plan.cfg.train)
        inputs = prepare_inputs(plan)
        model = inputs.adapted.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        train(plan, inputs, accelerator)
        speed = [
            r["train/samples_per_s"] for r in read_history(plan.cfg.train.output_dir) if "train/loss" in r
        ]
        metrics = evaluate(
            model,
            plan.task,
            inputs.dev,
            inputs.collator,
            inputs.labels,
            64,
            params=inputs.task_params,
            examples=inputs.examples["dev"],
        )
    return {
        "trainable": trainable,
        "total": total,
        "samples_per_s": speed[-1],
        "metric": metrics[DATASETS[dataset]["metric"]],
    }


def hf_encode(dataset: str, tokenizer: Any, rows: Any, label2id: dict[str, int]) -> Any:
    """The plain HF way: truncate to 64 tokens; NER labels on each word's first subword (-100 elsewhere)."""
    from datasets import Dataset

    if dataset == "rt":
        enc = tokenizer(list(rows["text"]), truncation=True, max_length=64)
        return Dataset.from_dict({**enc, "labels": [label2id[x] for x in rows["label"]]})
    enc = tokenizer(list(rows["tokens"]), is_split_into_words=True, truncation=True, max_length=64)
    labels = []
    for i, tags in enumerate(rows["tags"]):
        words = enc.word_ids(i)
        labels.append(
            [
                label2id[tags[w]] if w is not None and (j == 0 or words[j - 1] != w) else -100
                for j, w in enumerate(words)
            ]
        )
    return Dataset.from_dict({**enc, "labels": labels})


def hf_metric(dataset: str, logits: Any, label_ids: Any, labels: list[str]) -> float:
    """Accuracy (RT) or seqeval entity F1 over first-subword positions (WNUT-16)."""
    import numpy as np
    from seqeval.metrics import f1_score

    pred = np.argmax(logits, axis=-1)
    if dataset == "rt":
        return float((pred == label_ids).mean())
    keep = label_ids != -100
    gold = [[labels[t] for t in row[m]] for row, m in zip(label_ids, keep, strict=True)]
    guess = [[labels[t] for t in row[m]] for row, m in zip(pred, keep, strict=True)]
    return float(f1_score(gold, guess))


def hf_worker(dataset: str, data_dir: Path, a: argparse.Namespace) -> dict[str, Any]:
    """Plain peft + transformers.Trainer LoRA on the same rows, with the same LoRA config and lr."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunelab.training import resolve

    torch.set_num_threads(a.threads)
    methods, lr = VARIANTS["lora"][0], variant_lr(dataset, "lora")
    classify = dataset == "rt"
    with tempfile.TemporaryDirectory() as tmp:
        plan = resolve(config(dataset, data_dir, Path(tmp) / "run", methods, lr, a))
        tc = plan.cfg.train
        data = plan.task.load_data(plan.cfg.data, plan.task_params, tc.seed)
        label2id = {name: i for i, name in enumerate(data.labels)}
        tokenizer = AutoTokenizer.from_pretrained(plan.model_dir)
        train_set = hf_encode(dataset, tokenizer, data.train, label2id)
        dev_set = hf_encode(dataset, tokenizer, data.dev, label2id)
        auto = AutoModelForSequenceClassification if classify else AutoModelForTokenClassification
        base = auto.from_pretrained(plan.model_dir, num_labels=len(data.labels))
        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS if classify else TaskType.TOKEN_CLS,
            r=LORA["r"],
            lora_alpha=LORA["lora_alpha"],
            lora_dropout=LORA["lora_dropout"],
            target_modules=LORA["target_modules"],
            # tunelab trains the pooler with the head (sequence classification); same parameters here
            modules_to_save=["pooler"] if classify else None,
        )
        model = get_peft_model(base, lora)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=tc.num_train_epochs,
            per_device_train_batch_size=tc.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=lr,
            warmup_steps=0.1,  # transformers 5: a float in [0, 1) is a ratio of the total steps
            weight_decay=tc.weight_decay,
            lr_scheduler_type="linear",
            seed=tc.seed,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        collator = DataCollatorWithPadding if classify else DataCollatorForTokenClassification
        trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator(tokenizer))
        out = trainer.train()
        pred = trainer.predict(dev_set)
    return {
        "trainable": trainable,
        "total": total,
        "samples_per_s": out.metrics["train_samples_per_second"],
        "metric": hf_metric(dataset, pred.predictions, pred.label_ids, list(data.labels)),
    }


def prepared(dataset: str, root: Path) -> Path:
    """The dataset's CSVs (tunelab data prepare), made once under ``root``."""
    from tunelab.assets import prepare_dataset

    out = root / DATASETS[dataset]["asset"]
    if not (out / DATASETS[dataset]["train_file"]).is_file():
        prepare_dataset(DATASETS[dataset]["asset"], out)
    return out


def render(results: dict[str, dict[str, dict]], prov: dict, code_after: dict) -> str:
    lines = [
        *harness.provenance_lines(prov, code_after),
        f"- {harness.CONTENTION_NOTE}",
        "",
        "| dataset | variant | lr | trainable params | samples/s | peak RSS (MB) | dev metric "
        "| other cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, rows in results.items():
        metric = DATASETS[dataset]["metric"]
        for variant, r in rows.items():
            lr = variant_lr(dataset, "lora" if variant == "hf-peft-lora" else variant)
            if "refused" in r:
                lines.append(f"| {dataset} | {variant} | {lr:g} | refused: {r['refused']} | | | | |")
                continue
            share = 100 * r["trainable"] / r["total"]
            lines.append(
                f"| {dataset} | {variant} | {lr:g} | {r['trainable']:,} ({share:.2f}%) "
                f"| {r['samples_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {metric} {r['metric']:.3f} "
                f"| {r['foreign_cores']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="rt", help="comma-separated: rt, wnut16")
    parser.add_argument("--variants", default=",".join([*VARIANTS, "hf-peft-lora"]))
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=BENCH / "methods.json")
    parser.add_argument("--worker", nargs=2, metavar=("DATASET", "VARIANT"), help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        dataset, variant = a.worker
        data_dir = prepared(dataset, a.data_root)
        result = (
            hf_worker(dataset, data_dir, a)
            if variant == "hf-peft-lora"
            else tunelab_worker(dataset, variant, data_dir, a)
        )
        print(json.dumps(result))  # noqa: T201  (the parent reads the worker's result from stdout)
        return
    results: dict[str, dict[str, dict]] = {}
    prov = harness.provenance(threads=a.threads, with_files=True)
    for dataset in a.datasets.split(","):
        if dataset not in DATASETS:
            sys.exit(f"--datasets: unknown {dataset!r}; choose from {', '.join(DATASETS)}")
        for variant in a.variants.split(","):
            cmd = [sys.executable, __file__, "--worker", dataset, variant, *sys.argv[1:]]
            log = harness.OUT / "methods" / f"{dataset}-{variant}.log"
            row = harness.run_worker(cmd, log, f"{dataset}/{variant}")
            results.setdefault(dataset, {})[variant] = row
            print(f"{dataset}/{variant}: done in {row['wall_s']:.0f} s", file=sys.stderr)  # noqa: T201
    a.out.write_text(json.dumps(results, indent=2))
    print(render(results, prov, harness.source_state(with_files=True)))  # noqa: T201


if __name__ == "__main__":
    main()
