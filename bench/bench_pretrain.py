"""Perplexity before and after an lm_pretrain run, on the run's own dev split, with identical masks.

    python bench/bench_pretrain.py --run runs/mlm-bbc [--threads 2]

Run it from the directory where the run's relative data paths resolve. "before" is the model the
run started from (the shipped model, or ``<run>/init`` for a from-scratch run), "after" is
``<run>/best``; both are scored by ``tunelab.evaluation.evaluate`` on the dev split rebuilt from the
run's recorded config and tokenised with the run's tokenizer, so they see the same tokens and (the
eval RNG is forked from a fixed seed) the same masked positions.

Beside tunelab's perplexity (exp of the loss summed over every predicted token / their count) the
plain Hugging Face way is shown: ``exp(mean of per-batch mean losses)`` as ``run_mlm.py`` and
``Trainer.evaluate`` report it, which over-weights tokens of batches with few masked positions.
The JSON also holds this process's peak RSS, wall time and the cores other processes used meanwhile,
and the provenance (``harness.provenance``: date, command, CPU model and flags, versions, git state).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import harness


def score(model_dir: Path, run: Path, threads: int) -> dict[str, float]:
    """tunelab perplexity and the HF-style perplexity of ``model_dir`` on ``run``'s dev split."""
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer

    from tunelab.config import load_config
    from tunelab.data import load_text_data
    from tunelab.evaluation import evaluate
    from tunelab.models.architectures import LanguageModel
    from tunelab.tasks.lm_pretrain import TASK
    from tunelab.tasks.spec import tokenize_dataset

    torch.set_num_threads(threads)
    cfg = load_config(run / "run_config.yaml")
    params = TASK.params.model_validate(cfg.task.params)
    tokenizer = AutoTokenizer.from_pretrained(run / "best")
    dev = tokenize_dataset(TASK, params, tokenizer, load_text_data(cfg.data, cfg.train.seed).dev, [])
    collator = TASK.collator(tokenizer, params)
    set_seed(cfg.train.seed)  # as training did: a head missing from the checkpoint starts identical
    model = LanguageModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    ours = evaluate(model, TASK, dev, collator, [], cfg.train.eval_batch_size)
    losses = []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        for batch in DataLoader(dev, batch_size=cfg.train.eval_batch_size, collate_fn=collator):
            losses.append(model(**batch).loss.item())
    return {
        "perplexity": ours["perplexity"],
        "hf_style_perplexity": math.exp(sum(losses) / len(losses)),
        "n_tokens": ours["n_tokens"],
        "dev_blocks": len(dev),
    }


def main() -> None:
    """Score the start and best models of one run; JSON to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from tunelab.config import load_config
    from tunelab.models.load import resolve_model

    prov = harness.provenance(threads=args.threads)
    cfg = load_config(args.run / "run_config.yaml")
    start = (
        args.run / "init" if cfg.model.name_or_path == "scratch" else resolve_model(cfg.model.name_or_path)
    )
    with harness.measure() as m:
        before = score(start, args.run, args.threads)
        after = score(args.run / "best", args.run, args.threads)
    out = {
        "run": str(args.run),
        "before": {"model": str(start), **before},
        "after": {"model": str(args.run / "best"), **after},
        **harness.process_figures(m),
        "provenance": prov,
    }
    print(json.dumps(out, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
