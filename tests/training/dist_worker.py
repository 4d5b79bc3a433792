"""Run by torchrun in test_distributed.py: train from a YAML config, dump this rank's losses and metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunelab.config import load_config
from tunelab.evaluation import evaluate
from tunelab.training import build_accelerator, prepare_inputs, resolve, train


def main(config: Path, out: Path) -> None:
    plan = resolve(load_config(config))
    accelerator = build_accelerator(plan.cfg.train)
    inputs = prepare_inputs(plan)
    dev_metrics: list[dict] = []

    def evaluate_dev(model):
        metrics = evaluate(
            model,
            plan.task,
            inputs.dev,
            inputs.collator,
            inputs.labels,
            12,
            accelerator,
            params=plan.task_params,
            examples=inputs.examples["dev"],
        )
        dev_metrics.append(metrics)
        return metrics

    result = train(plan, inputs, accelerator, evaluate=evaluate_dev)
    dump = {"world_size": accelerator.num_processes, "losses": result.losses, "dev": dev_metrics}
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(dump))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
