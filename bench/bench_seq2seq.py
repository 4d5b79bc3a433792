"""Held-out ROUGE/BLEU of a seq2seq run's best model vs its untrained init vs the lead baseline.

    python bench/bench_seq2seq.py --run runs/seq2seq-bbc-headlines [--threads 2] [--show 5]

Run it from the directory where the run's relative data paths resolve, after ``tunelab train``. The
"init" model is ``<run>/init`` (the random-init T5 and tokenizer tunelab built before step 0), "best"
is ``<run>/best``; both are scored by ``tunelab.evaluation.evaluate`` on the run's test split with the
same task params (greedy generation, same token budget), which also scores the lead baseline (the
first N words of each article) on the same rows. Prints one JSON object and a few example headlines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tunelab.config import load_config
    from tunelab.evaluation import evaluate
    from tunelab.evaluation.predict import predict_records
    from tunelab.export.artifact import load_artifact
    from tunelab.tasks.spec import tokenize_dataset

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config(args.run / "run_config.yaml")
    best = load_artifact(args.run / "best")
    rows = best.task.load_data(cfg.data, best.task_params, cfg.train.seed).test
    init_tok = AutoTokenizer.from_pretrained(args.run / "init")
    init = AutoModelForSeq2SeqLM.from_pretrained(args.run / "init", dtype=torch.float32)
    out: dict[str, object] = {"n_test": len(rows)}
    for name, model, tokenizer in (("init", init, init_tok), ("best", best.model, best.tokenizer)):
        features = tokenize_dataset(best.task, best.task_params, tokenizer, rows, [])
        collator = best.task.collator(tokenizer, best.task_params)
        start = time.perf_counter()
        scores = evaluate(
            model,
            best.task,
            features,
            collator,
            [],
            64,
            params=best.task_params,
            examples=rows,
            tokenizer=tokenizer,
        )
        out[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in scores.items()}
        out[f"{name}_eval_seconds"] = round(time.perf_counter() - start, 1)
    shown = [{"text": t} for t in rows["text"][: args.show]]
    out["examples"] = [
        {
            "gold": gold,
            "generated": pred["generated"],
            "lead": " ".join(src["text"].split()[: best.task_params.lead_words]),
        }
        for gold, pred, src in zip(rows["target"], predict_records(best, shown, 16), shown, strict=False)
    ]
    print(json.dumps(out, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
