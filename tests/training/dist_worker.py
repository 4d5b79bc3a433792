"""Run by torchrun in test_distributed.py: train from a YAML config, dump this rank's losses and metrics.

Arguments: config, out dir, and optionally the evaluation at which rank 0 alone is sent SIGINT (0: none)
and ``resume`` to continue from the newest checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from tunelab.config import load_config
from tunelab.evaluation import evaluate
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.training.checkpoint import latest_checkpoint


def main(config: Path, out: Path, stop_at_eval: int = 0, resume: bool = False) -> None:
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
        if len(dev_metrics) == stop_at_eval and accelerator.is_main_process:
            os.kill(os.getpid(), signal.SIGINT)
        return metrics

    resume_from = latest_checkpoint(plan.cfg.train.output_dir) if resume else None
    result = train(plan, inputs, accelerator, evaluate=evaluate_dev, resume_from=resume_from)
    dump = {"world_size": accelerator.num_processes, "losses": result.losses, "dev": dev_metrics}
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(dump))


if __name__ == "__main__":
    stop_at_eval = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    main(Path(sys.argv[1]), Path(sys.argv[2]), stop_at_eval, resume="resume" in sys.argv[4:])
