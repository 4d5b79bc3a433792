"""Held-out response loss and greedy replies before and after a causal_lm (SFT) run.

    python bench/bench_sft.py --run runs/sft-smollm2 [--prompts 3] [--threads 2]

Run it from the directory where the run's relative data paths resolve. "before" is the model the run
started from (``model.name_or_path`` of its recorded config), "after" is ``<run>/best``; both are
scored by ``tunelab.evaluation.evaluate`` on the run's dev split tokenised with the run's template and
labels, and both answer the first ``--prompts`` dev prompts greedily through ``tunelab``'s one
generation path (64 new tokens at most).

Beside tunelab's ``token_loss`` (summed over every response token of the split / their count) the
plain Hugging Face way is shown: the mean of per-batch mean losses, as ``Trainer.evaluate`` reports
it, which over-weights tokens of batches with short responses. The JSON also holds this process's
peak RSS, the cores other processes used meanwhile, and the provenance (``harness.provenance``: date,
command, CPU model and flags, versions, git state).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import harness


def score(model_dir: Path, run: Path, n_prompts: int) -> dict[str, object]:
    """tunelab token loss, HF-style mean-of-batch-means loss and greedy replies of ``model_dir``."""
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.config import load_config
    from tunelab.evaluation import evaluate
    from tunelab.inference.generate import GenerationJob, generate
    from tunelab.models.load import resolve_model
    from tunelab.tasks.causal_lm import TASK, chat_prompt
    from tunelab.tasks.spec import tokenize_dataset

    cfg = load_config(run / "run_config.yaml")
    params = TASK.params.model_validate(cfg.task.params)
    tokenizer = AutoTokenizer.from_pretrained(run / "best")
    dev = TASK.load_data(cfg.data, params, cfg.train.seed).dev
    features = tokenize_dataset(TASK, params, tokenizer, dev, [])
    collate = TASK.collator(tokenizer, params)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(str(model_dir)), dtype=torch.float32).eval()
    start = time.perf_counter()
    metrics = evaluate(model, TASK, features, collate, [], 8, params=params)
    with torch.no_grad():
        batch_means = [
            float(model(**batch).loss) for batch in DataLoader(features, batch_size=8, collate_fn=collate)
        ]
    replies = []
    for messages in dev["messages"][:n_prompts]:
        prompt = chat_prompt(tokenizer, messages[:-1])
        job = GenerationJob(prompt=prompt, max_new_tokens=64, temperature=0, add_special_tokens=False)
        reply = generate(model, tokenizer, job).text
        turns = {"prompt": messages[-2]["content"], "reference": messages[-1]["content"]}
        replies.append({**turns, "reply": reply})
    return {
        "token_loss": metrics["token_loss"],
        "perplexity": metrics["perplexity"],
        "hf_mean_of_batch_means": sum(batch_means) / len(batch_means),
        "n_tokens": metrics["n_tokens"],
        "seconds": time.perf_counter() - start,
        "replies": replies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tunelab.config import load_config

    prov = harness.provenance(threads=args.threads)
    base = load_config(args.run / "run_config.yaml").model.name_or_path
    with harness.measure() as m:
        before = score(Path(base), args.run, args.prompts)
        after = score(args.run / "best", args.run, args.prompts)
    out = {
        "before": before,
        "after": after,
        **harness.process_figures(m),
        "provenance": prov,
    }
    print(json.dumps(out, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
