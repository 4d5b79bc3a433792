"""MoE benchmark: dense MiniLM vs DeepSeekMoE-upcycled MiniLM on Rotten Tomatoes and BBC News.

    flock -x /tmp/tunelab-cpu.lock python bench/bench_moe.py [--datasets rt,bbc]
    python bench/bench_moe.py --step0     # only the step-0 distance of the candidate layouts

Each training row is one `python -m tunelab.cli train` subprocess (``harness.run``: peak RSS from
``os.wait4``), 1 epoch, torch threads = 2, on the same rows per dataset (same seed, sizes and split).
Rows:
``dense`` (plain full fine-tuning, the HF baseline), ``moe-default`` (the method's defaults: shared
3/4 of the FFN + top-1 of 8 routed copies of the last 1/4, sigmoid gates x 2, α1 0.01 + aux-free bias
γ 1e-4, router lr x 0.01: within 1 % of dense at step 0), ``moe-former`` (the former default: 1
shared + 8 routed quarter slices, top-2, normalised gates x 3, α1 0.01 + γ 0.001, router lr x 1) and
``moe-copy-exact`` (4 routed full-FFN copies, top-2, normalised, balanced: equal to dense at step 0).
Accuracy is dev accuracy of the best model; samples/s is the loop's logged training throughput
(mean over logging windows after the first); max/mean load and dead experts are the router report
of best/ on dev (worst layer) and the last logged training window.

The dispatch overhead is a separate in-process micro-benchmark: forward+backward of one 32x64 batch,
median of 20 after 3 warm-ups, for dense MiniLM, the upcycled MoE, and a FLOP-equivalent dense MiniLM
whose FFN width equals the MoE's active width (shared + top-k experts; 1536 for the default).

``--step0`` prints, for each candidate layout, the mean per-token relative error of every upcycled FFN's
output against the dense FFN on the same input, and max |Δ logits| (random head), on 128 Rotten
Tomatoes training sentences (the figures quoted in ``methods/moe/upcycle.py``).
Results go into bench/RESULTS.md between the ``bench:moe`` markers (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

import harness
from harness import ROOT

OUT = harness.OUT / "moe"
THREADS = 2
MOE: dict = {}  # the method's defaults
FORMER = {
    "n_shared_experts": 1,
    "n_routed_experts": 8,
    "top_k": 2,
    "init": "partition",
    "granularity": 4,
    "score_func": "softmax",
    "norm_topk_prob": True,
    "router_init_std": 0.02,
    "router_lr_scale": 1.0,
    "upcycle_noise": 0.01,
    "aux_loss_alpha": 0.01,
    "bias_update_speed": 0.001,
}
# Function-preserving at step 0: 4 routed full-FFN copies, top-2, normalised gates, balanced.
COPY = {
    "n_shared_experts": 0,
    "n_routed_experts": 4,
    "top_k": 2,
    "init": "copy",
    "norm_topk_prob": True,
    "router_init_std": 0.02,
    "router_lr_scale": 1.0,
    "upcycle_noise": 0.01,
    "aux_loss_alpha": 0.01,
    "bias_update_speed": 0.001,
}
VARIANTS = {
    "dense": [{"name": "full"}],
    "moe-default": [{"name": "moe", "params": MOE}],
    "moe-former": [{"name": "moe", "params": FORMER}],
    "moe-copy-exact": [{"name": "moe", "params": COPY}],
}
DATASETS = {
    "rt": {"asset": "rotten-tomatoes", "train": 2000, "dev": 500, "max_length": 64, "batch_size": 32},
    "bbc": {"asset": "bbc-news", "train": 800, "dev": 400, "max_length": 128, "batch_size": 16},
}


def config_for(dataset: str, variant: str, data_dir: Path) -> dict:
    d = DATASETS[dataset]
    return {
        "model": {"name_or_path": "minilm-l6"},
        "data": {
            "train_file": str(data_dir / "train.csv"),
            "dev_ratio": 0.2,
            "max_train_samples": d["train"],
            "max_eval_samples": d["dev"],
        },
        "task": {"name": "classification", "params": {"max_length": d["max_length"]}},
        "methods": VARIANTS[variant],
        "train": {
            "output_dir": str(OUT / f"{dataset}-{variant}"),
            "num_train_epochs": 1,
            "batch_size": d["batch_size"],
            "lr": 1e-4,
            "warmup_ratio": 0.1,
            "logging_steps": 5,
            "save_steps": 100000,
            "metric_for_best_model": "accuracy",
            "seed": 42,
        },
    }


def run_training(dataset: str, variant: str, data_dir: Path) -> dict:
    """One `tunelab train` subprocess; its wall time, peak RSS and the contention meanwhile."""
    cfg_path = OUT / f"{dataset}-{variant}.yaml"
    cfg_path.write_text(yaml.safe_dump(config_for(dataset, variant, data_dir)))
    cmd = [sys.executable, "-m", "tunelab.cli", "train", str(cfg_path), "--overwrite"]
    row = harness.run(cmd, OUT / f"{dataset}-{variant}.log", env=harness.child_env(THREADS))
    return harness.require_ok(row, f"{dataset}/{variant}")


def param_counts(model) -> tuple[int, int]:
    """(active per token, total) parameters: a token uses K of the N routed experts (router included)."""
    from tunelab.methods.moe.stats import active_params

    counts = active_params(model)
    return counts["active"], counts["total"]


def summarise(dataset: str, variant: str, run: dict) -> dict:
    from tunelab.inference.artifact import load_artifact

    out = OUT / f"{dataset}-{variant}"
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["train/samples_per_s"] for r in history if "train/samples_per_s" in r][1:]
    last_train = [r for r in history if "train/moe/max_mean_load" in r]
    active, total = param_counts(load_artifact(out / "best").model)
    router = metrics.get("router_dev", {})
    return {
        "dataset": dataset,
        "variant": variant,
        "accuracy": metrics["dev"]["accuracy"],
        "active_params": active,
        "total_params": total,
        "samples_per_s": statistics.mean(speeds),
        "peak_rss_mb": run["peak_rss_mb"],
        "wall_s": run["wall_s"],
        "foreign_cores": run["foreign_cores"],
        "dev_max_mean_load": router.get("max_mean_load"),
        "dev_dead_experts": router.get("dead_experts"),
        "train_max_mean_load_last": last_train[-1]["train/moe/max_mean_load"] if last_train else None,
        "router_layers": [
            {k: layer[k] for k in ("max_mean_load", "dead_experts", "entropy", "bias_norm")}
            for layer in router.get("layers", [])
        ],
    }


def dispatch_overhead() -> dict:
    """ms per forward+backward (32x64 batch) for dense, MoE and FLOP-equivalent dense MiniLM."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from tunelab.methods.moe import Params, upcycle
    from tunelab.models.load import resolve_model

    torch.set_num_threads(THREADS)
    path = resolve_model("minilm-l6")
    config = AutoConfig.from_pretrained(path, num_labels=2)
    dense = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    moe = upcycle(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), Params(**MOE))
    params = Params(**MOE)
    active_width = (params.n_shared + params.top_k) * config.intermediate_size // params.granularity
    flop_eq = AutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(path, num_labels=2, intermediate_size=active_width)
    )
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 20000, (32, 64)),
        "attention_mask": torch.ones(32, 64, dtype=torch.long),
        "labels": torch.randint(0, 2, (32,)),
    }

    def time_model(model) -> float:
        model.train()
        times = []
        for i in range(23):
            t0 = time.perf_counter()
            model(**batch).loss.backward()
            model.zero_grad(set_to_none=True)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    with harness.measure() as m:
        ms = {
            "dense": time_model(dense),
            "flop_equivalent_dense": time_model(flop_eq),
            "moe": time_model(moe),
        }
    ratio = ms["moe"] / ms["flop_equivalent_dense"]
    return {
        **ms,
        "active_ffn_width": active_width,
        "moe_over_flop_eq": ratio,
        "foreign_cores": m["foreign_cores"],
    }


def markdown(rows: list[dict], overhead: dict, prov: dict, code_after: dict) -> str:
    lines = [
        "## MoE benchmark: dense MiniLM vs DeepSeekMoE-upcycled MiniLM",
        "",
        *harness.provenance_lines(prov, code_after),
        "",
        "moe-default = the method's defaults: shared expert = first 3/4 of the FFN neurons, 8 routed "
        "copies of the last 1/4, top-1, sigmoid gates x 2, router std 1e-3 and lr x 0.01, α1 0.01 + "
        "aux-free bias γ 1e-4. moe-former = 1 shared + 8 routed quarter slices, top-2, normalised "
        "softmax gates x 3, upcycle_noise 0.01, α1 0.01 + γ 0.001. moe-copy-exact = 4 routed "
        "full-FFN copies, top-2, normalised, balanced, equal to dense at step 0. RT: 2,000 train / 500 dev, "
        "len 64, bs 32; BBC: 800 train / 340 dev (dev_ratio 0.2 of the 1,700-row train file is under the "
        "400 cap), len 128, bs 16; 1 epoch, lr 1e-4. Accuracy on dev.",
        "",
        "| data | variant | dev acc | active / total params | samples/s | peak RSS MB | "
        "dev max/mean load (worst layer) | dev dead experts | train max/mean load (last window) "
        "| other cores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        load = "-" if r["dev_max_mean_load"] is None else f"{r['dev_max_mean_load']:.2f}"
        dead = "-" if r["dev_dead_experts"] is None else f"{r['dev_dead_experts']:.0f}"
        train_load = "-" if r["train_max_mean_load_last"] is None else f"{r['train_max_mean_load_last']:.2f}"
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['accuracy']:.4f} | "
            f"{r['active_params'] / 1e6:.2f}M / {r['total_params'] / 1e6:.2f}M | {r['samples_per_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {load} | {dead} | {train_load} | {r['foreign_cores']:.2f} |"
        )
    lines += [
        "",
        "Dispatch overhead (forward+backward of one 32x64 batch, median of 20, ms): "
        f"dense MiniLM {overhead['dense']:.1f}, FLOP-equivalent dense (FFN width "
        f"{overhead['active_ffn_width']}) {overhead['flop_equivalent_dense']:.1f}, MoE {overhead['moe']:.1f} "
        f"-> MoE / FLOP-equivalent = {overhead['moe_over_flop_eq']:.2f}x "
        f"(other cores {overhead['foreign_cores']:.2f}).",
        "",
        f"({harness.CONTENTION_NOTE}.)",
        "",
        "Per-layer router health on dev (max/mean load, dead, entropy nats, bias norm):",
        "",
    ]
    for r in rows:
        if r["router_layers"]:
            cells = "; ".join(
                f"L{i}: {x['max_mean_load']:.2f}/{x['dead_experts']:.0f}/{x['entropy']:.2f}/"
                f"{x['bias_norm']:.3f}"
                for i, x in enumerate(r["router_layers"])
            )
            lines.append(f"- {r['dataset']} {r['variant']}: {cells}")
    return "\n".join(lines)


STEP0 = {
    "former default (1+8 quarter slices, top-2 normalised x 3)": FORMER,
    "default, router std 0 (exact)": {"router_init_std": 0.0},
    "default (sigmoid x 2, router std 1e-3)": {},
    "default with softmax x 8": {"score_func": "softmax"},
    "default with router std 0.02": {"router_init_std": 0.02},
    "default with softmax x 8, router std 0.02": {"score_func": "softmax", "router_init_std": 0.02},
    "default with upcycle_noise 0.01": {"upcycle_noise": 0.01},
}


def step0_distance() -> None:
    """Print each STEP0 layout's per-layer FFN relative error and max |Δ logits| against dense MiniLM."""
    import copy
    import csv

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.methods.moe import Params, upcycle
    from tunelab.methods.moe.layer import moe_layers
    from tunelab.models.load import resolve_model

    path = resolve_model("minilm-l6")
    with (ROOT / "data" / "rotten-tomatoes" / "train.csv").open() as f:
        texts = [row["text"] for row in csv.DictReader(f)][:128]
    batch = AutoTokenizer.from_pretrained(path)(
        texts, padding=True, truncation=True, max_length=64, return_tensors="pt"
    )
    mask = batch["attention_mask"].bool()
    torch.manual_seed(0)
    dense = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    ffns = [
        (layer.intermediate.dense, layer.intermediate.intermediate_act_fn, layer.output.dense)
        for layer in copy.deepcopy(dense).bert.encoder.layer
    ]
    with torch.no_grad():
        reference = dense(**batch).logits
    for name, params in STEP0.items():
        torch.manual_seed(0)
        moe = upcycle(copy.deepcopy(dense), Params(**params)).eval()
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in moe_layers(moe):
            layer.register_forward_hook(lambda _m, args, out, seen=seen: seen.append((args[0], out)))
        with torch.no_grad():
            logits = moe(**batch).logits
            errors = []
            for (u, out), (up, act, down) in zip(seen, ffns, strict=True):
                expected = down(act(up(u)))
                errors.append(float(((out - expected).norm(dim=-1) / expected.norm(dim=-1))[mask].mean()))
        cells = " ".join(f"{e:.1e}" for e in errors)
        gap = float((logits - reference).abs().max())
        print(f"{name}: FFN rel err per layer {cells}; max |Δ logits| {gap:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="rt,bbc")
    parser.add_argument("--step0", action="store_true", help="only print the step-0 distances")
    args = parser.parse_args()
    if args.step0:
        sys.path.insert(0, str(ROOT / "src"))
        step0_distance()
        return
    prov = harness.provenance(threads=THREADS, with_files=True)
    sys.path.insert(0, str(ROOT / "src"))
    from tunelab.assets import prepare_dataset

    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets.split(","):
        data_dir = OUT / "data" / dataset
        if not (data_dir / "train.csv").is_file():
            prepare_dataset(DATASETS[dataset]["asset"], data_dir)
        for variant in VARIANTS:
            run = run_training(dataset, variant, data_dir)
            rows.append(summarise(dataset, variant, run))
            print(json.dumps(rows[-1]), flush=True)
    overhead = dispatch_overhead()
    print(json.dumps(overhead), flush=True)
    (OUT / "results.json").write_text(json.dumps({"rows": rows, "overhead": overhead}, indent=2))
    section = markdown(rows, overhead, prov, harness.source_state(with_files=True))
    harness.write_section("moe", section)
    print(section)


if __name__ == "__main__":
    main()
