"""Run by torchrun in test_distributed.py: train from a YAML config, dump this rank's step losses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunelab.config import load_config
from tunelab.training import build_accelerator, prepare_inputs, resolve, train


def main(config: Path, out: Path) -> None:
    plan = resolve(load_config(config))
    accelerator = build_accelerator(plan.cfg.train)
    inputs = prepare_inputs(plan)
    result = train(plan, inputs, accelerator, evaluate=lambda model: {"accuracy": 0.5})
    dump = {"world_size": accelerator.num_processes, "losses": result.losses, "checkpoint": str(result.checkpoint)}
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(dump))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
