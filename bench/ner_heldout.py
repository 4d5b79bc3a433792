"""Score a token-classification run's ``best/`` on its held-out test split, the frequency tagger beside it.

The splits are rebuilt from the run's recorded config exactly as training built them (seeded), so the
model and the baseline are scored on the same rows; the baseline learns from the same train split.
Useful when a run was stopped before its own final report (``tunelab train`` scores test only at the end).
The JSON also holds this process's peak RSS, the cores other processes used meanwhile, and the
provenance (``harness.provenance``: date, command, CPU model and flags, versions, git state).

    PYTHONPATH=src python bench/ner_heldout.py runs/ner_wnut16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import harness


def main(run: Path) -> dict:
    from tunelab.config import validate_config
    from tunelab.evaluation import evaluate
    from tunelab.inference.artifact import load_artifact
    from tunelab.tasks.spec import tokenize_dataset

    art = load_artifact(run / "best")
    cfg = validate_config(art.info["config"])
    data = art.task.load_data(cfg.data, art.task_params, cfg.train.seed)
    out = {"step": art.info.get("step"), "dev_at_save": art.info.get("dev_metrics")}
    if data.test is not None:
        features = tokenize_dataset(art.task, art.task_params, art.tokenizer, data.test, art.labels)
        collate = art.task.collator(art.tokenizer, art.task_params)
        out["test"] = evaluate(
            art.model, art.task, features, collate, art.labels, 64, params=art.task_params, examples=data.test
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run dir (its best/ and recorded config are read)")
    args = parser.parse_args()
    prov = harness.provenance()
    with harness.measure() as m:
        result = main(args.run)
    print(json.dumps(result | harness.process_figures(m) | {"provenance": prov}, indent=2))  # noqa: T201
