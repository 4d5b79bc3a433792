"""Held-out ROUGE/BLEU of a seq2seq run's model vs its untrained init vs the lead baseline.

    python bench/bench_seq2seq.py --run runs/seq2seq-bbc-headlines [--threads 2] [--show 5]

Run it from the directory where the run's relative data paths resolve, after ``tunelab train``. The
"init" model is ``<run>/init`` (the random-init T5 and tokenizer tunelab built before step 0); the
"trained" model is ``<run>/best``, or, for a run stopped before its first evaluation saved one, the
weights of its latest checkpoint (``checkpoints/step-N/model.safetensors``, loaded into the init
architecture). Both are scored by ``tunelab.evaluation.evaluate`` on the run's test split with the run's
fitted task params (greedy generation, same token budget), which also scores the lead baseline (the
first N words of each article) on the same rows. Prints one JSON object with a few example outputs,
this process's peak RSS, the cores other processes used during each scoring, and the provenance
(``harness.provenance``: date, command, CPU model and flags, versions, git state).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

import harness


def trained_model(run: Path) -> tuple[Any, str]:
    """``best/``'s model, else the latest checkpoint's weights in the init architecture; and its name."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSeq2SeqLM

    from tunelab.inference.artifact import load_artifact
    from tunelab.training.checkpoint import list_checkpoints

    if (run / "best" / "config.json").is_file():
        return load_artifact(run / "best").model, "best"
    latest = list_checkpoints(run)[-1]
    model = AutoModelForSeq2SeqLM.from_pretrained(run / "init", dtype=torch.float32)
    missing, unexpected = model.load_state_dict(load_file(latest / "model.safetensors"), strict=False)
    if unexpected or not all("embed_tokens" in k or "lm_head" in k for k in missing):
        raise RuntimeError(f"{latest}: weights do not fit {run / 'init'}: {missing or unexpected}")
    model.tie_weights()  # the checkpoint stores the shared embedding once
    return model, latest.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=5)
    args = parser.parse_args()
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tunelab.config import load_config
    from tunelab.evaluation import evaluate
    from tunelab.inference.predict import predict_outputs
    from tunelab.tasks import TASKS
    from tunelab.tasks.seq2seq import generated_texts, lead
    from tunelab.tasks.spec import Predicted, tokenize_dataset

    torch.set_num_threads(args.threads)
    prov = harness.provenance(threads=args.threads)

    cfg = load_config(args.run / "run_config.yaml")
    task = TASKS.get(cfg.task.name)
    data = task.load_data(cfg.data, task.params.model_validate(cfg.task.params), cfg.train.seed)
    params = task.fit(task.params.model_validate(cfg.task.params), data.train, [])
    rows = data.test
    tokenizer = AutoTokenizer.from_pretrained(args.run / "init")
    features = tokenize_dataset(task, params, tokenizer, rows, [])
    collator = task.collator(tokenizer, params)
    trained, name = trained_model(args.run)
    init = AutoModelForSeq2SeqLM.from_pretrained(args.run / "init", dtype=torch.float32)
    out: dict[str, Any] = {"n_test": len(rows), "lead_words": params.lead_words, "trained_from": name}
    for label, model in (("init", init), ("trained", trained)):
        with harness.measure() as m:
            scores = evaluate(
                model, task, features, collator, [], 64, params=params, examples=rows, tokenizer=tokenizer
            )
        out[label] = {k: round(v, 3) if isinstance(v, float) else v for k, v in scores.items()}
        out[f"{label}_eval_seconds"] = round(m["wall_s"], 1)
        out[f"{label}_foreign_cores"] = round(m["foreign_cores"], 2)
    shown = features.select(range(args.show))
    outputs = predict_outputs(trained, task, shown, collator, args.show, params=params)
    texts = generated_texts(Predicted(outputs.arrays, shown, None, [], params, tokenizer))
    leads = lead(rows["text"][: args.show], params.lead_words)
    out["examples"] = [
        {"gold": gold, "generated": text, "lead": first}
        for gold, text, first in zip(rows["target"][: args.show], texts, leads, strict=True)
    ]
    out["peak_rss_mb"] = round(harness.peak_rss_mb())  # the per-model times and contention are above
    out["provenance"] = prov
    print(json.dumps(out, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
