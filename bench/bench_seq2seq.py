"""Held-out ROUGE/BLEU of a seq2seq run's model vs its untrained init vs the lead baseline.

    python bench/bench_seq2seq.py --run runs/seq2seq-bbc-headlines [--threads 2] [--show 5]
    python bench/bench_seq2seq.py --run runs/headlines-smollm2 [--splits dev test] [--max-new-tokens 24]

A run of a generating task (``causal_lm`` with a ``template``, e.g. ``examples/headlines_smollm2.yaml``)
is scored the way ``tunelab predict`` answers: each source of the data's source/target pairs goes
through the task's prompt (``generation_prompt``), the reply is decoded greedily up to
``--max-new-tokens`` (the one generation path, ``generate_records``), and the replies are compared with
the targets by the seq2seq task's ROUGE/BLEU, beside the lead baseline (the first N words, N the mean
target length on train) on the same rows. "init" is then the base model (``model.name_or_path``)
asked with the same prompt: the zero-shot score.

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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Bound:
    """A causal LM bound to a generating task and its params (``inference.continuous.Generative``)."""

    model: Any
    tokenizer: Any
    task: Any
    task_params: Any


def generated_scores(bound: Bound, rows: Any, max_new_tokens: int) -> tuple[dict[str, float], list[str]]:
    """ROUGE/BLEU of greedy replies to each row's ``text`` against its ``target``, and the replies."""
    from tunelab.inference.continuous import generate_records
    from tunelab.inference.generate import GenerationOptions
    from tunelab.tasks.seq2seq import text_scores

    records = [{"text": text} for text in rows["text"]]
    replies = generate_records(bound, records, GenerationOptions(max_new_tokens=max_new_tokens), max_rows=16)
    texts = [" ".join(reply["generated"].split()) for reply in replies]
    return text_scores(texts, list(rows["target"])), texts


def score_generative(args: argparse.Namespace, cfg: Any, task: Any) -> dict[str, Any]:
    """Zero-shot base model vs the run's ``best/`` vs the lead baseline, per split in ``args.splits``."""
    from tunelab.inference.artifact import load_artifact
    from tunelab.models.load import load_causal_lm, resolve_model
    from tunelab.tasks import seq2seq

    trained = load_artifact(args.run)
    base, base_tokenizer = load_causal_lm(resolve_model(cfg.model.name_or_path))
    zero_shot = Bound(base.eval(), base_tokenizer, task, trained.task_params)  # the same prompt, untrained
    models: dict[str, Any] = {"init": zero_shot, "trained": trained}
    models = {label: models[label] for label in args.models}
    data = seq2seq.load_data(cfg.data, seq2seq.Params(), cfg.train.seed)
    words = seq2seq.fit(seq2seq.Params(), data.train, []).lead_words or 1
    out: dict[str, Any] = {"lead_words": words, "max_new_tokens": args.max_new_tokens}
    for split in args.splits:
        rows = data.dev if split == "dev" else data.test
        rows = rows.select(range(min(args.rows or len(rows), len(rows))))
        leads = seq2seq.lead(rows["text"], words)
        scores: dict[str, Any] = {"n": len(rows)}
        scores["lead"] = seq2seq.text_scores(leads, list(rows["target"]))
        for label, model in models.items():
            with harness.measure() as m:
                scores[label], texts = generated_scores(model, rows, args.max_new_tokens)
            scores[f"{label}_eval_seconds"] = round(m["wall_s"], 1)
            scores[f"{label}_foreign_cores"] = round(m["foreign_cores"], 2)
            scores[f"{label}_examples"] = texts[: args.show]
        scores["gold_examples"] = list(rows["target"][: args.show])
        out[split] = {
            k: {n: round(v, 2) for n, v in s.items()} if isinstance(s, dict) else s for k, s in scores.items()
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=5)
    parser.add_argument("--splits", nargs="+", choices=["dev", "test"], default=["test"])
    parser.add_argument("--max-new-tokens", type=int, default=24, help="generating tasks: reply cap")
    parser.add_argument("--models", nargs="+", choices=["init", "trained"], default=["init", "trained"])
    parser.add_argument("--rows", type=int, default=None, help="generating tasks: first N rows per split")
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
    if task.generation_prompt is not None:
        result = score_generative(args, cfg, task)
        result |= {"peak_rss_mb": round(harness.peak_rss_mb()), "provenance": prov}
        print(json.dumps(result, indent=2))  # noqa: T201
        return
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
