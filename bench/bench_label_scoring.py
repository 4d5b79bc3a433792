"""Causal-LM label scoring: one packed row per prompt (``shared_prefix``) vs one row per label.

Why: ``prompt_classification`` scores every label's words after the prompt. One row per label reads
the prompt C times; the packed row reads it once and keeps each label to the prompt with a 4D mask.
This bench scores the same BBC News test rows (5 labels) both ways with the shipped SmolLM2 and the
prompt of ``examples/zeroshot_bbc_smollm2.yaml``, in the same process, alternating the two layouts
``--repeats`` times; it reports the median wall time of each, their ratio, the largest difference
between the two layouts' calibrated label scores, and whether every prediction agrees.

    python bench/bench_label_scoring.py --rows 100 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import harness
from harness import ROOT


def scores(model: Any, tokenizer: Any, texts: list[str], labels: list[str], shared: bool, batch: int) -> Any:
    """(N, C) calibrated label scores of ``texts`` in one layout, with the example's task params."""
    import torch
    import yaml

    from tunelab.tasks import prompt_classification as pc

    raw = yaml.safe_load((ROOT / "examples" / "zeroshot_bbc_smollm2.yaml").read_text())["task"]["params"]
    params = pc.fit(pc.Params(**{**raw, "shared_prefix": shared}), None, labels)
    collate = pc.collator(tokenizer, params)
    ids = pc.preprocess({"text": texts}, tokenizer, params, {})["input_ids"]
    out = []
    with torch.no_grad():
        for i in range(0, len(ids), batch):
            rows = collate([{"input_ids": row} for row in ids[i : i + batch]])
            logits = model(**{k: v for k, v in rows.items() if k not in pc.SCORE_KEYS})
            out.append(pc.label_scores(logits, rows)["logits"])
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args()
    import csv

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.assets import prepare_dataset
    from tunelab.models.load import resolve_model

    torch.set_num_threads(a.threads)
    prov = harness.provenance(threads=a.threads)
    data = ROOT / "data" / "bbc-news"
    if not (data / "test.csv").is_file():
        prepare_dataset("bbc-news", data)
    with (data / "test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[: a.rows]
    texts, labels = [r["text"] for r in rows], sorted({r["label"] for r in rows})
    path = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    times: dict[bool, list[float]] = {True: [], False: []}
    result: dict[bool, Any] = {}
    with harness.measure() as m:
        for _ in range(a.repeats):
            for shared in (False, True):
                start = time.perf_counter()
                result[shared] = scores(model, tokenizer, texts, labels, shared, a.batch)
                times[shared].append(time.perf_counter() - start)
    per_label, packed = statistics.median(times[False]), statistics.median(times[True])
    diff = float((result[True] - result[False]).abs().max())
    agree = bool((result[True].argmax(-1) == result[False].argmax(-1)).all())
    lines = [
        *harness.provenance_lines(prov),
        f"- {harness.CONTENTION_NOTE}: {m['foreign_cores']:.2f}",
        "",
        f"| layout | rows | median s (of {a.repeats}) | rows/s |",
        "|---|---:|---:|---:|",
        f"| one row per label | {a.rows} | {per_label:.1f} | {a.rows / per_label:.1f} |",
        f"| shared prefix (packed) | {a.rows} | {packed:.1f} | {a.rows / packed:.1f} |",
        "",
        f"Speed-up {per_label / packed:.2f}x; largest |score difference| {diff:.2e}; "
        f"predictions agree on every row: {agree}.",
    ]
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
