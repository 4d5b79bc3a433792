"""Where a MiniLM training step spends its time, and what the candidate speed levers buy (issue 18).

    python bench/bench_levers.py [--model minilm-l6] [--steps 30] [--threads 2] [--write]

One process, one model, the same length-grouped batches of real Rotten Tomatoes rows (batch 32,
max_length 64, as examples/sentiment.yaml trains) for every variant; a step is forward + backward +
fused AdamW step, the way tunelab's loop does it. Variants:

- eager fp32 / eager bf16 autocast: what tunelab runs today (``precision: fp32`` / ``auto`` on a
  CPU with native bf16);
- ``torch.compile`` (inductor) fp32 / bf16 with bucketed static shapes: every batch padded to 32 or
  64 tokens so the compiler sees two shapes; its compile time is reported apart;
- eager without dropout (p = 0): not a lever to ship (it changes the recipe), but the upper bound of
  what a cheaper dropout could save.

Each eager variant also gets a torch.profiler breakdown: the share of step time in GEMMs (mm, addmm,
bmm), in dropout's random numbers (bernoulli_), in the optimizer and everything else. GFLOP/s uses
bench_train's formula (``step_gflop``) on real (unbucketed) tokens for eager, padded for compiled,
so compiled rows are not credited for the padding they add; samples/s is the figure to compare.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import harness

BATCH, MAX_LENGTH, BUCKETS = 32, 64, (32, 64)


def batches(tokenizer: Any, rows: int) -> list[dict[str, torch.Tensor]]:
    """Length-grouped batches of RT train texts (sorted by length, chunked, then shuffled by chunk)."""
    from tunelab.assets import prepare_dataset

    out_dir = harness.OUT / "levers-data"
    if not (out_dir / "train.csv").exists():
        prepare_dataset("rotten-tomatoes", out_dir)
    with open(out_dir / "train.csv", encoding="utf-8") as fh:
        texts = [row["text"] for _, row in zip(range(rows), csv.DictReader(fh), strict=False)]
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    chunks = [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]
    torch.manual_seed(0)
    chunks = [chunks[i] for i in torch.randperm(len(chunks)).tolist()]
    return [tokenizer.pad({"input_ids": [enc[i] for i in c]}, return_tensors="pt") for c in chunks]


def bucketed(batch: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """The batch right-padded to the smallest bucket that holds it (static shapes for the compiler)."""
    length = batch["input_ids"].shape[1]
    target = next(b for b in BUCKETS if b >= length)
    pad = target - length
    return {
        "input_ids": torch.nn.functional.pad(batch["input_ids"], (0, pad), value=pad_id),
        "attention_mask": torch.nn.functional.pad(batch["attention_mask"], (0, pad), value=0),
    }


def make_step(model: torch.nn.Module, forward: Callable[..., Any], bf16: bool) -> Callable[[dict], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    labels = torch.zeros(BATCH, dtype=torch.long)

    def step(batch: dict) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def breakdown(step: Callable[[dict], None], data: list[dict]) -> dict[str, float]:
    """Share of profiled CPU time per kind of op over a few steps."""
    from torch.profiler import profile

    with profile() as prof:
        for batch in data[:4]:
            step(batch)
    kinds = {"gemm": ("aten::mm", "aten::addmm", "aten::bmm"), "dropout rng": ("aten::bernoulli_",)}
    total, shares = 0.0, dict.fromkeys([*kinds, "optimizer"], 0.0)
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        for kind, names in kinds.items():
            if event.key in names:
                shares[kind] += event.self_cpu_time_total
        if "adamw" in event.key.lower():
            shares["optimizer"] += event.self_cpu_time_total
    out = {k: v / total for k, v in shares.items()}
    out["rest"] = 1 - sum(out.values())
    return out


def measure(step: Callable[[dict], None], data: list[dict], steps: int) -> dict[str, Any]:
    """Median step time over ``steps`` batches after one pass over each distinct shape (warm-up)."""
    t0 = time.perf_counter()
    seen: set[tuple[int, ...]] = set()
    for batch in data:
        shape = tuple(batch["input_ids"].shape)
        if shape not in seen:
            seen.add(shape)
            step(batch)
    warmup = time.perf_counter() - t0
    times, tokens, pairs = [], 0, 0
    for batch in data[:steps]:
        t = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - t)
        b, n = batch["input_ids"].shape
        tokens, pairs = tokens + b * n, pairs + b * n * n
    return {
        "median_s": statistics.median(times),
        "total_s": sum(times),
        "warmup_s": warmup,
        "tokens": tokens,
        "pairs": pairs,
        "shapes": len(seen),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="replace the bench:levers section of RESULTS.md")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.models.load import resolve_model
    from tunelab.models.run_info import cpu_has_native_bf16

    path = resolve_model(a.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = batches(tokenizer, rows=BATCH * a.steps)
    flop_model = {"n_params": 0, "layers": 0, "hidden": 0}
    precisions = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    prov = harness.provenance(threads=a.threads, with_files=True)
    rows: list[dict[str, Any]] = []
    for name, compiled, dropout in [
        *[(f"eager {pr}", False, True) for pr in precisions],
        *[(f"eager {pr}, dropout off (bound, not a lever)", False, False) for pr in precisions],
        *[(f"torch.compile {pr}, buckets {BUCKETS}", True, True) for pr in precisions],
    ]:
        bf16 = "bf16" in name
        torch.manual_seed(0)
        kwargs = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **kwargs)
        model.train()
        flop_model = {
            "n_params": sum(q.numel() for n, q in model.named_parameters() if "embeddings" not in n),
            "layers": model.config.num_hidden_layers,
            "hidden": model.config.hidden_size,
        }
        forward = torch.compile(model, dynamic=False) if compiled else model
        step = make_step(model, forward, bf16)
        feed = [bucketed(b, tokenizer.pad_token_id) for b in data] if compiled else data
        result = measure(step, feed, a.steps)
        flops = 6 * flop_model["n_params"] * result["tokens"]
        flops += 12 * flop_model["layers"] * flop_model["hidden"] * result["pairs"]
        row = {
            "variant": name,
            "samples_s": BATCH / result["median_s"],
            "median_ms": result["median_s"] * 1000,
            "gflops": flops / result["total_s"] / 1e9,
            "warmup_s": result["warmup_s"],
            "shapes": result["shapes"],
        }
        if not compiled and dropout:
            row["breakdown"] = breakdown(step, feed)
        rows.append(row)
        print(f"{name}: {row['samples_s']:.1f} samples/s (warm-up {row['warmup_s']:.1f} s)", flush=True)
    md = render(rows, prov, a)
    print(md)
    if a.write:
        harness.write_section("levers", md)


def render(rows: list[dict[str, Any]], prov: dict[str, Any], a: argparse.Namespace) -> str:
    """The bench:levers section: one row per variant, ratios against eager at the same precision."""
    eager = {
        r["variant"].split()[1]: r["samples_s"] for r in rows if r["variant"] in ("eager fp32", "eager bf16")
    }
    lines = [
        "## Training-step levers: where a MiniLM step goes, what compile and dropout are worth (issue 18)",
        "",
        *harness.provenance_lines(prov),
        f"- {a.steps} length-grouped batches of {BATCH} Rotten Tomatoes train rows (max_length "
        f"{MAX_LENGTH}), forward + backward + fused AdamW; median step; torch.compile warm-up = "
        "compiling every bucket.",
        "",
        "| variant | samples/s | vs eager, same precision | median step (ms) | GFLOP/s "
        "| warm-up incl. compile (s) | time in GEMMs / dropout RNG / AdamW / rest |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        precision = "bf16" if "bf16" in r["variant"] else "fp32"
        share = r.get("breakdown")
        parts = ("gemm", "dropout rng", "optimizer", "rest")
        split = " / ".join(f"{share[k]:.0%}" for k in parts) if share else "-"
        lines.append(
            f"| {r['variant']} | {r['samples_s']:.1f} | {r['samples_s'] / eager[precision]:.2f}x "
            f"| {r['median_ms']:.0f} | {r['gflops']:.0f} | {r['warmup_s']:.1f} | {split} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
