"""Plain Hugging Face ``transformers.Trainer`` baseline for ``bench/bench_train.py``.

Same rows and hyperparameters as a tunelab run: the tunelab config (YAML + ``--key.path VALUE``
overrides) is loaded and resolved with tunelab's own code, and tunelab's data layer supplies the
train/dev/test rows, so the splits are identical. Everything after that is stock transformers:
AutoTokenizer, AutoModelForSequenceClassification, DataCollatorWithPadding (dynamic padding) and
Trainer with eval once per epoch, no checkpoints, no reporting integrations.

    python bench/hf_trainer_baseline.py examples/sentiment.yaml --timings out.json [--key.path VALUE ...]

Honoured from the config: data.*, task.params.max_length, train.{num_train_epochs, batch_size,
eval_batch_size, lr, weight_decay, adam_*, lr_scheduler_type, warmup_ratio/warmup_steps,
max_grad_norm, gradient_accumulation_steps, seed, group_by_length, logging_steps, output_dir, precision}.
``train.group_by_length`` maps to ``train_sampling_strategy="group_by_length"`` (else "random");
``train.precision: bf16`` to ``bf16=True, use_cpu=True`` (autocast on a CPU), ``fp32`` to neither.

Timings (written as JSON to ``--timings``) use the same definition as the tunelab side of the
benchmark: wall-clock timestamps of the start of the first training micro-step and of the end of
every optimizer step; evaluation intervals are recorded so they can be excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

T_PROCESS_START = time.time()

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from bench_train import describe_optimizer, new_timings, rows_fingerprint  # noqa: E402  (bench/ is this script's sys.path[0])
from tunelab.config import load_config  # noqa: E402
from tunelab.data import load_labeled_data  # noqa: E402
from tunelab.training.plan import resolve  # noqa: E402


class StepClock(TrainerCallback):
    """End-of-optimizer-step timestamps (after optimizer.step, scheduler.step and zero_grad)."""

    def __init__(self, timings: dict) -> None:
        self.timings = timings

    def on_step_end(self, args, state, control, **kwargs):
        self.timings["step_end"].append(time.time())


class TimedTrainer(Trainer):
    """Stock Trainer; only records when micro-steps start, their padded shapes, and evaluation intervals."""

    def __init__(self, *a, timings: dict, **kw) -> None:
        super().__init__(*a, **kw)
        self.timings = timings

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.timings["first_step_start"] is None:
            self.timings["first_step_start"] = time.time()
        self.timings["batch_shapes"].append(list(inputs["input_ids"].shape))
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, *a, **kw):
        t0 = time.time()
        try:
            return super().evaluate(*a, **kw)
        finally:
            self.timings["intervals"].append(["eval", t0, time.time()])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--timings", type=Path, required=True, help="write timings/results JSON here")
    parser.add_argument(
        "--optim", default=None, help="TrainingArguments.optim (default: transformers' own default)"
    )
    args, overrides = parser.parse_known_args()

    plan = resolve(load_config(args.config, overrides))
    cfg, tc = plan.cfg, plan.cfg.train
    if plan.task.name != "classification" or [s.name for s, _ in plan.methods] != ["full"]:
        sys.exit("hf_trainer_baseline: only task classification with method full is mirrored")
    max_length = plan.task_params.max_length

    timings = new_timings(T_PROCESS_START)

    # Rows: tunelab's data layer, exactly as `tunelab train` calls it (labels from the task params).
    data = load_labeled_data(cfg.data, plan.task_params.labels, tc.seed)
    labels = data.labels
    label2id = {name: i for i, name in enumerate(labels)}
    timings["rows_sha256"] = rows_fingerprint(data)
    timings["n_rows"] = {"train": len(data.train), "dev": len(data.dev), "test": len(data.test or [])}

    tokenizer = AutoTokenizer.from_pretrained(plan.model_dir)
    has_pair = "text_pair" in data.train.column_names

    def tokenize(batch):
        enc = tokenizer(
            batch["text"], batch["text_pair"] if has_pair else None, truncation=True, max_length=max_length
        )
        enc["labels"] = [label2id[label] for label in batch["label"]]
        return enc

    def features(split):
        return split.map(tokenize, batched=True, remove_columns=split.column_names)

    train_ds, dev_ds = features(data.train), features(data.dev)
    test_ds = features(data.test) if data.test is not None else None

    transformers.set_seed(tc.seed)  # fresh head init, as tunelab seeds right before loading the model
    model = AutoModelForSequenceClassification.from_pretrained(
        plan.model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label2id,
        dtype=torch.float32,
    )

    # transformers v5 has no warmup_ratio: a float warmup_steps in [0, 1) is a ratio of the total steps
    warmup = tc.warmup_steps if tc.warmup_steps is not None else tc.warmup_ratio or 0.0
    extra = {"optim": args.optim} if args.optim else {}
    if tc.precision not in ("fp32", "bf16"):
        sys.exit(f"hf_trainer_baseline: train.precision {tc.precision!r} is not mirrored (use fp32 or bf16)")
    if tc.precision == "bf16":  # autocast through accelerate, as the Trainer does it on a CPU
        extra.update(bf16=True, use_cpu=not torch.cuda.is_available())
    targs = TrainingArguments(
        output_dir=str(tc.output_dir),
        per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=tc.eval_batch_size,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        num_train_epochs=tc.num_train_epochs,
        learning_rate=tc.lr,
        weight_decay=tc.weight_decay,
        adam_beta1=tc.adam_beta1,
        adam_beta2=tc.adam_beta2,
        adam_epsilon=tc.adam_epsilon,
        max_grad_norm=tc.max_grad_norm if tc.max_grad_norm is not None else 0.0,
        lr_scheduler_type="constant_with_warmup"
        if tc.lr_scheduler_type == "constant"
        else tc.lr_scheduler_type,
        warmup_steps=warmup,
        seed=tc.seed,
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=tc.logging_steps,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        **extra,
    )

    def compute_metrics(pred):
        logits, gold = pred.predictions, pred.label_ids
        return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(gold)).mean())}

    trainer = TimedTrainer(
        model=model,
        args=targs,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[StepClock(timings)],
        timings=timings,
    )
    out = trainer.train()
    dev_history = [r for r in trainer.state.log_history if "eval_accuracy" in r]
    results = {
        "dev_accuracy": dev_history[-1]["eval_accuracy"] if dev_history else None,
        "train_loss": out.training_loss,
        "hf_train_metrics": out.metrics,
        "losses": {r["step"]: r["loss"] for r in trainer.state.log_history if "loss" in r},
        "precision": "bf16" if targs.bf16 else "fp32",
        "optim": targs.optim.value if hasattr(targs.optim, "value") else str(targs.optim),
        "optimizer_desc": describe_optimizer(getattr(trainer.optimizer, "optimizer", trainer.optimizer)),
        "train_sampling_strategy": targs.train_sampling_strategy,
        "warmup_steps": targs.get_warmup_steps(trainer.state.max_steps),
        "max_steps": trainer.state.max_steps,
    }
    if test_ds is not None:
        results["test_accuracy"] = trainer.evaluate(test_ds, metric_key_prefix="test")["test_accuracy"]
    timings["results"] = results
    timings["torch_threads"] = torch.get_num_threads()
    timings["process_end"] = time.time()
    args.timings.parent.mkdir(parents=True, exist_ok=True)
    args.timings.write_text(json.dumps(timings, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
