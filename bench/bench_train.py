"""Side-by-side training benchmark: `tunelab train` vs a plain Hugging Face Trainer on the same rows.

    python bench/bench_train.py [--seeds 42,43 --repeats R --variants A,B --train-samples N --max-length L]

Each variant runs in its own subprocess, one after another, so peak RSS (``os.wait4`` rusage of that
child) and timings are separate. Both sides get the same config: examples/sentiment.yaml plus one
override list (data subset sizes, batch size, epochs, lr, warmup, weight decay, max_length, seed,
eval once per epoch, no mid-training checkpoints), and both read their rows through tunelab's data
layer (a sha256 of every train/dev/test row is compared). Variants differ only in framework, batch
order, optimizer and precision (``VARIANTS``); the pairs in ``PAIRS`` hold precision equal, except
the out-of-the-box pair, where each side runs its defaults. Every variant runs every seed; accuracy
is compared per pair as the mean test accuracy over seeds.

Efficiency: each run's achieved GFLOP/s (``step_gflop``) over a matmul ceiling measured in the same
invocation after the runs (``ceiling_worker``: the model's own GEMM shapes at the runs' batch size).

Timing definition, identical for both sides: *train time* = wall clock from the start of the first
training micro-step (first batch already collated) to the end of the last optimizer step, minus any
evaluation / checkpoint / model-saving intervals inside that window. samples/s = training samples
actually fed (sum of batch sizes = train rows x epochs) / train time. Model load, tokenisation,
evaluation and the final dev/test report are outside it (they show up in "startup" and "process wall").

How the timestamps are taken without touching src/: the tunelab variant runs the very Typer app that
the `tunelab` console script runs (``tunelab.cli:app``, same argv), in a worker that first wraps a few
module attributes with pure observers (first ``send_to_device`` of the loop, ``scheduler.step``,
``evaluate``, ``save_checkpoint``, ``save_artifact``, ``load_labeled_data``). The HF side records
the same points with a TrainerCallback / Trainer subclass (bench/hf_trainer_baseline.py).
Variant ``tunelab-cli`` runs the literal console script with no hooks (only self-reported numbers).

Results: a markdown table on stdout and in bench/RESULTS.md, between the ``bench:train`` markers
(``harness.write_section``; the rest of the file is kept). Raw per-variant JSON and logs go to bench/out/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import harness
from harness import BENCH, rel
from tunelab.config import load_config
from tunelab.models.run_info import cpu_has_native_bf16

T_PROCESS_START = time.time()
HF_SCRIPT = BENCH / "hf_trainer_baseline.py"


@dataclass(frozen=True)
class Variant:
    """One side of a pair: which framework, and how it is set up beyond the shared overrides."""

    framework: str  # tunelab | tunelab-cli | hf
    grouped: bool  # length-grouped batches (tunelab's default; HF's group_by_length)
    precision: str  # fp32 | bf16 | auto (tunelab's own choice: bf16 on a CPU with native bf16, else fp32)
    optim: str | None = None  # HF TrainingArguments.optim; None = transformers' default


# Pairs compare equal precision: "tuned" HF is group_by_length + fused AdamW (+ bf16 where the CPU has
# it natively: bf16=True, use_cpu=True); "hf-defaults" is what `Trainer(args=TrainingArguments(...))`
# does with only the recipe's hyperparameters set. bf16 variants are skipped on CPUs without native bf16.
VARIANTS: dict[str, Variant] = {
    "tunelab": Variant("tunelab", True, "auto"),
    "hf-tuned-bf16": Variant("hf", True, "bf16", "adamw_torch_fused"),
    "tunelab-fp32": Variant("tunelab", True, "fp32"),
    "hf-tuned-fp32": Variant("hf", True, "fp32", "adamw_torch_fused"),
    "hf-defaults": Variant("hf", False, "fp32"),
    "tunelab-ungrouped-fp32": Variant("tunelab", False, "fp32"),
    "tunelab-cli": Variant("tunelab-cli", True, "auto"),
}
DEFAULT_VARIANTS = "tunelab,hf-tuned-bf16,tunelab-fp32,hf-tuned-fp32,hf-defaults"
# (tunelab side, HF side, what the pair isolates); a pair is reported when both sides ran
PAIRS = [
    ("tunelab", "hf-tuned-bf16", "headline: equal precision (bf16 autocast), HF fully tuned"),
    ("tunelab-fp32", "hf-tuned-fp32", "equal precision (fp32), HF fully tuned"),
    ("tunelab", "hf-defaults", "out of the box: each at its defaults (tunelab picks bf16 here, HF fp32)"),
    ("tunelab-ungrouped-fp32", "hf-defaults", "both random batches, fp32"),
]


def rows_fingerprint(data) -> str:
    """sha256 over (split, text, text_pair, label) of every row, in order (shared with the HF script)."""
    h = hashlib.sha256()
    for name in ("train", "dev", "test"):
        split = getattr(data, name)
        if split is None:
            continue
        pairs = split["text_pair"] if "text_pair" in split.column_names else [None] * len(split)
        for text, pair, label in zip(split["text"], pairs, split["label"], strict=True):
            h.update(json.dumps([name, text, pair, label]).encode())
    return h.hexdigest()


def describe_optimizer(opt) -> str:
    """e.g. ``AdamW fused`` / ``AdamW for-loop`` (what torch picks when neither flag is set on CPU)."""
    d = opt.defaults
    impl = "fused" if d.get("fused") else "foreach" if d.get("foreach") else "default (for-loop on CPU)"
    return f"{type(opt).__name__} {impl}"


# --------------------------------------------------------------------------- tunelab worker (child)


def new_timings(process_start: float) -> dict:
    """The timing record both workers fill in (same keys, so one analysis reads both)."""
    return {
        "process_start": process_start,
        "first_step_start": None,
        "step_end": [],
        "intervals": [],
        "batch_shapes": [],
    }


def tunelab_worker(timings_path: Path, cli_args: list[str]) -> None:
    """Run ``tunelab.cli:app`` with ``cli_args`` after installing observe-only timing hooks."""
    import atexit

    timings = new_timings(T_PROCESS_START)

    import tunelab.evaluation as evaluation
    import tunelab.models.artifact as artifact
    import tunelab.tasks.classification as classification
    import tunelab.training.loop as loop

    def timed(kind: str, fn):
        def wrapper(*a, **kw):
            t0 = time.time()
            try:
                return fn(*a, **kw)
            finally:
                timings["intervals"].append([kind, t0, time.time()])

        return wrapper

    orig_send = loop.send_to_device

    def send_to_device(batch, device, *a, **kw):  # called once per training micro-batch, before forward
        if timings["first_step_start"] is None:
            timings["first_step_start"] = time.time()
        timings["batch_shapes"].append(list(batch["input_ids"].shape))
        return orig_send(batch, device, *a, **kw)

    orig_build_scheduler = loop.build_scheduler

    def build_scheduler(*a, **kw):
        scheduler = orig_build_scheduler(*a, **kw)
        base = type(scheduler)

        class TimedScheduler(base):  # a subclass, not an instance attribute: state_dict() pickles __dict__
            def step(self, *sa, **skw):  # the loop calls it right after optimizer.step()
                out = base.step(self, *sa, **skw)
                timings["step_end"].append(time.time())
                return out

        scheduler.__class__ = TimedScheduler
        return scheduler

    orig_build_optimizer = loop.build_optimizer

    def build_optimizer(*a, **kw):
        opt = orig_build_optimizer(*a, **kw)
        timings["optimizer"] = describe_optimizer(opt)
        return opt

    orig_load = classification.load_labeled_data

    def load_labeled_data(*a, **kw):
        data = orig_load(*a, **kw)
        timings["rows_sha256"] = rows_fingerprint(data)
        timings["n_rows"] = {"train": len(data.train), "dev": len(data.dev), "test": len(data.test or [])}
        return data

    loop.send_to_device = send_to_device
    loop.build_scheduler = build_scheduler
    loop.build_optimizer = build_optimizer
    loop.save_checkpoint = timed("checkpoint", loop.save_checkpoint)
    evaluation.evaluate = timed("eval", evaluation.evaluate)
    artifact.save_model = timed("save_best", artifact.save_model)
    classification.load_labeled_data = load_labeled_data

    def dump() -> None:
        import torch

        timings["torch_threads"] = torch.get_num_threads()
        timings["process_end"] = time.time()
        timings_path.parent.mkdir(parents=True, exist_ok=True)
        timings_path.write_text(json.dumps(timings, indent=1), encoding="utf-8")

    atexit.register(dump)
    from tunelab.cli import app

    app(args=cli_args, prog_name="tunelab")


# --------------------------------------------------------------------------- matmul ceiling (child)


def ceiling_worker(model: str, tokens: int, dtypes: list[str]) -> dict:
    """GFLOP/s of the model's own GEMMs at ``tokens`` rows, back to back: what the step could reach.

    For every ``nn.Linear`` shape of one encoder layer (Q, K, V, O: H->H; FFN: H->I, I->H) the three
    GEMMs of a training step are timed: forward X[T,in] W^T, input grad dY[T,out] W, weight grad
    dY^T X. The ceiling is their total FLOPs (2 m k n each) over their total time, at the same torch
    threads as the runs. Nothing else (LayerNorm, GELU, softmax, dropout, optimizer) is in it, so a
    step's GFLOP/s over this figure is the share of the step that does matmul work at full speed.
    Also returns the non-embedding parameter count and the shapes the FLOP formula needs.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from tunelab.models.load import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model))
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    net = AutoModelForSequenceClassification.from_config(config)
    n_params = sum(p.numel() for name, p in net.named_parameters() if "embeddings" not in name)
    shapes = [(hidden, hidden)] * 4 + [(hidden, inter), (inter, hidden)]
    out: dict = {"n_params": n_params, "hidden": hidden, "layers": layers, "tokens": tokens, "gflops": {}}
    for name in dtypes:
        dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[name])
        gemms = []
        for k, n in shapes:
            x, w, dy = (torch.randn(*s, dtype=dtype) for s in ((tokens, k), (n, k), (tokens, n)))
            gemms += [(x, w.t()), (dy, w), (dy.t(), x)]
        flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in gemms)
        for a, b in gemms:  # warm-up: first calls pick kernels and allocate
            a @ b
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                for a, b in gemms:
                    a @ b
            best = min(best, (time.perf_counter() - t0) / 10)
        big = torch.randn(2048, 2048, dtype=dtype)
        big @ big
        t0 = time.perf_counter()
        for _ in range(3):
            big @ big
        out["gflops"][name] = {
            "model_gemms": flops / best / 1e9,
            "square_2048": 3 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9,
        }
    return out


def step_gflop(row: dict, model: dict) -> float | None:
    """Achieved GFLOP/s of a run: (6 N tokens + 12 L H sum(B T^2)) / train time.

    N = non-embedding parameters (each multiply-add of a token through a weight: 2 FLOPs forward,
    4 backward); the second term is attention's QK^T and AV (2 B T^2 H each per layer forward, x3
    with backward). Tokens are padded tokens, since padding is computed too; embedding lookups,
    LayerNorm, softmax and the optimizer are not counted (small, and not matmul work).
    """
    if not row.get("train_time_s"):
        return None
    flops = 6 * model["n_params"] * row["padded_tokens"]
    flops += 12 * model["layers"] * model["hidden"] * row["attention_pairs"]
    return flops / row["train_time_s"] / 1e9


# --------------------------------------------------------------------------- driver (parent)


def common_overrides(a: argparse.Namespace) -> list[str]:
    """Overrides applied to BOTH sides on top of the YAML, so data and hyperparameters match."""
    pairs = {
        "data.max_train_samples": a.train_samples,
        "data.max_eval_samples": a.eval_samples,
        "train.num_train_epochs": a.epochs,
        "train.batch_size": a.batch_size,
        "train.eval_batch_size": a.eval_batch_size,
        "task.params.max_length": a.max_length,
        "train.lr": a.lr,
        "train.warmup_ratio": a.warmup_ratio,
        "train.lr_scheduler_type": "linear",
        "train.weight_decay": a.weight_decay,
        "train.max_grad_norm": 1.0,
        "train.gradient_accumulation_steps": 1,
        "train.logging_steps": 10,
        "train.eval_steps": "null",  # tunelab: evaluate at the end of each epoch (HF: eval_strategy="epoch")
        "train.save_steps": 10**9,  # tunelab: no mid-training checkpoint (one at the end is unavoidable)
    }
    out: list[str] = []
    for key, value in pairs.items():
        out += [f"--{key}", str(value)]
    return out


def run_variant(
    name: str, a: argparse.Namespace, common: list[str], env: dict[str, str], seed: int, rep: int
) -> dict:
    v = VARIANTS[name]
    framework, grouped, optim = v.framework, v.grouped, v.optim
    out_dir = a.out / name  # overwritten by each repeat
    tag = f"{name}.s{seed}.r{rep}"
    timings_path = a.out / f"{tag}.timings.json"
    log_path = a.out / f"{tag}.log"
    timings_path.unlink(missing_ok=True)
    variant_args = [
        *common,
        "--train.seed",
        str(seed),
        "--train.precision",
        v.precision,
        "--train.output_dir",
        str(out_dir),
        "--train.group_by_length",
        str(grouped).lower(),
    ]
    config = str(a.config)
    if framework == "tunelab":
        cli = ["train", config, "--overwrite", *variant_args]
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_tunelab_worker",
            str(timings_path),
            "--",
            *cli,
        ]
    elif framework == "tunelab-cli":
        cmd = [str(Path(sys.executable).with_name("tunelab")), "train", config, "--overwrite", *variant_args]
    else:
        cmd = [sys.executable, str(HF_SCRIPT), config, "--timings", str(timings_path), *variant_args]
        if optim:
            cmd += ["--optim", optim]
    for attempt in range(1, a.retries + 2):
        print(f"[{tag}] attempt {attempt}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        timings_path.unlink(missing_ok=True)
        row = harness.run(cmd, log_path, env=env, max_wait_idle=a.max_wait_idle)
        row.update(variant=name, seed=seed, rep=rep, framework=framework, grouped=grouped, attempts=attempt)
        if row["exit"] != 0 or row["foreign_cores"] <= a.max_foreign_cores or attempt > a.retries:
            break
        print(
            f"[{name}] other processes used {row['foreign_cores']:.2f} cores during the run; retrying",
            file=sys.stderr,
            flush=True,
        )
    proc_returncode, wall = row["exit"], row["wall_s"]
    if proc_returncode != 0:
        print(f"[{name}] FAILED (exit {proc_returncode}); see {log_path}", file=sys.stderr, flush=True)
        return row
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    if timings.get("first_step_start"):
        row.update(summarise_timings(timings, framework))
    if framework.startswith("tunelab"):
        row.update(tunelab_outputs(out_dir))
        row["optimizer"] = timings.get("optimizer", "-")
        chosen = re.search(r"mixed precision (\w+)", log_path.read_text(encoding="utf-8", errors="replace"))
        row["precision"] = {"no": "fp32"}.get(chosen[1], chosen[1]) if chosen else "?"
    else:
        res = timings["results"]
        row.update(
            precision=res["precision"],
            dev_acc=res["dev_accuracy"],
            test_acc=res.get("test_accuracy"),
            optimizer=f"{res['optim']}: {res['optimizer_desc']}",
            self_reported_sps=res["hf_train_metrics"].get("train_samples_per_second"),
            self_reported_def="HF train_samples_per_second (train() start->end, incl. the epoch-end eval)",
            final_loss=res["losses"][max(res["losses"], key=int)] if res["losses"] else None,
            warmup_steps=res["warmup_steps"],
        )
    print(f"[{tag}] done in {wall:.0f}s: {row.get('samples_per_s', 0):.1f} samples/s", file=sys.stderr)
    return row


def summarise_timings(t: dict, framework: str) -> dict:
    first, ends = t["first_step_start"], t["step_end"]
    last = ends[-1]
    excluded = 0.0
    for _, s, e in t["intervals"]:
        excluded += max(0.0, min(e, last) - max(s, first))
    train_time = last - first - excluded
    samples = sum(shape[0] for shape in t["batch_shapes"])
    padded_tokens = sum(shape[0] * shape[1] for shape in t["batch_shapes"])
    attention_pairs = sum(shape[0] * shape[1] ** 2 for shape in t["batch_shapes"])
    step_times = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return {
        "steps": len(ends),
        "samples": samples,
        "train_time_s": train_time,
        "samples_per_s": samples / train_time,
        "median_step_s": statistics.median(step_times) if step_times else None,
        "padded_tokens": padded_tokens,
        "attention_pairs": attention_pairs,
        "mean_padded_len": padded_tokens / samples,
        "startup_s": first - t["process_start"],
        "excluded_in_window_s": excluded,
        "after_train_s": t["process_end"] - last,
        "rows_sha256": t.get("rows_sha256"),
        "n_rows": t.get("n_rows"),
        "torch_threads": t.get("torch_threads"),
    }


def tunelab_outputs(out_dir: Path) -> dict:
    """Accuracy from best/metrics.json and the loop's own throughput from metrics.jsonl."""
    out: dict = {}
    metrics = json.loads((out_dir / "best" / "metrics.json").read_text())
    out["dev_acc"] = metrics["dev"]["accuracy"]
    out["test_acc"] = metrics.get("test", {}).get("accuracy")
    records = [
        json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    train = [r for r in records if "train/samples_per_s" in r]
    if train:
        # each record covers the steps since the previous one; weight by steps: total steps / total time
        prev, steps, seconds = 0, 0, 0.0
        for r in train:
            n = r["step"] - prev
            steps, seconds, prev = steps + n, seconds + n / r["train/samples_per_s"], r["step"]
        out["self_reported_sps"] = steps / seconds  # x batch size cancels (per-step samples/s)
        out["self_reported_sps_mean"] = statistics.fmean(r["train/samples_per_s"] for r in train)
        out["self_reported_def"] = "tunelab metrics.jsonl train/samples_per_s, step-weighted over the windows"
        out["final_loss"] = train[-1]["train/loss"]
    run_cfg = out_dir / "run_config.yaml"
    out["run_config"] = rel(run_cfg) if run_cfg.exists() else None
    return out


def sps_range(values: list[float], spec: str = ".1f") -> str:
    return f"{format(min(values), spec)}-{format(max(values), spec)}" if values else "-"


def fmt(value, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def aggregate(rows: list[dict]) -> list[dict]:
    """One summary per variant (first-seen order): medians over the successful repeats."""
    out: list[dict] = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == name]
        ok = [r for r in runs if r.get("exit") == 0]
        summary = dict(ok[0] if ok else runs[0])
        summary["n_ok"], summary["n_runs"] = len(ok), len(runs)
        for key, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("exit", "rep"):
                values = [r[key] for r in ok if isinstance(r.get(key), (int, float))]
                if values:
                    median = statistics.median_low if isinstance(value, int) else statistics.median
                    summary[key] = median(values)
        sps = [r["samples_per_s"] for r in ok if r.get("samples_per_s")]
        summary["sps_all"] = sps
        summary["runs"] = ok
        if not ok:
            summary["exit"] = runs[-1].get("exit")
        out.append(summary)
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else None


def _per_seed(rows: list[dict], key: str, spec: str = ".3f") -> str:
    """``key`` of each seed (first repeat), e.g. ``0.811 / 0.806``."""
    seen = {}
    for r in rows:
        seen.setdefault(r["seed"], r.get(key))
    return " / ".join(fmt(v, spec) for v in seen.values())


def render(rows: list[dict], a: argparse.Namespace, prov: dict, code_after: dict) -> str:
    """The bench:train section: setup, the per-variant table, the pairs, the per-run samples/s."""
    model = a.model
    ceilings = {k: v["model_gemms"] for k, v in model["gflops"].items()}
    lines = [
        "## Training benchmark: tunelab vs plain Hugging Face Trainer",
        "",
        *harness.provenance_lines(prov, code_after),
        f"- setup: {a.config} with max_train_samples={a.train_samples}, max_eval_samples={a.eval_samples}, "
        f"epochs={a.epochs}, batch_size={a.batch_size}, max_length={a.max_length}, lr={a.lr}, "
        f"linear schedule, warmup_ratio={a.warmup_ratio}, weight_decay={a.weight_decay}, max_grad_norm=1.0, "
        f"seeds {a.seeds} x {a.repeats} repeat(s) each, dynamic padding, eval once at the end of each "
        "epoch (dev), test evaluated after training; torch threads left at their default; HF_HUB_OFFLINE=1.",
        f"- CPU native bf16: {'yes' if a.native_bf16 else 'no (bf16 variants skipped)'}. "
        "tunelab `precision: auto` picks bf16 autocast where native, fp32 elsewhere; "
        'HF tuned = `train_sampling_strategy="group_by_length"`, `optim=adamw_torch_fused`, and '
        "`bf16=True, use_cpu=True` in the bf16 pair; HF defaults = `TrainingArguments` with only the "
        "recipe's hyperparameters (random batches, fp32, transformers' default optimizer).",
        "- HF side: `bench/hf_trainer_baseline.py` (Trainer, AutoModelForSequenceClassification, "
        "DataCollatorWithPadding, eval_strategy=epoch, save_strategy=no, report_to=none).",
        "- train time = first training micro-step start -> last optimizer step end, minus "
        "eval/checkpoint/save time inside that window; samples/s = train samples x epochs / train time. "
        "process wall = whole subprocess (imports, data, model load, training, final dev/test evaluation; "
        "tunelab also saves best/ and a checkpoint). Peak RSS = `ru_maxrss` of that subprocess.",
        f"- GFLOP/s = (6 N tokens + 12 L H sum(B T^2)) / train time, N = {model['n_params'] / 1e6:.2f} M "
        f"non-embedding parameters, L = {model['layers']}, H = {model['hidden']}, padded tokens "
        "(`step_gflop`). Ceiling, measured in this run after the variants (`ceiling_worker`): the "
        f"model's own GEMMs (forward, input grad, weight grad of every Linear shape) at {model['tokens']} "
        "tokens per batch (the runs' median), back to back: "
        + ", ".join(
            f"{k} {v['model_gemms']:.0f} GFLOP/s (2048^3 square: {v['square_2048']:.0f})"
            for k, v in model["gflops"].items()
        )
        + ".",
        "",
    ]
    summaries = aggregate(rows)
    by_name = {r["variant"]: r for r in summaries if r.get("exit") == 0 and r.get("samples_per_s")}
    columns = [
        ("variant", lambda r: r["variant"]),
        ("precision", lambda r: r.get("precision", "-")),
        ("length grouping", lambda r: "yes" if r["grouped"] else "no"),
        ("optimizer", lambda r: r.get("optimizer", "-")),
        ("samples/s (median)", lambda r: fmt(r.get("samples_per_s"))),
        ("min-max", lambda r: sps_range(r["sps_all"])),
        ("GFLOP/s", lambda r: fmt(r.get("gflops"), ".0f")),
        (
            "of ceiling",
            lambda r: (
                f"{r['gflops'] / ceilings[r['precision']]:.0%}"
                if r.get("gflops") and r.get("precision") in ceilings
                else "-"
            ),
        ),
        ("mean padded len", lambda r: fmt(r.get("mean_padded_len"))),
        ("startup (s)", lambda r: fmt(r.get("startup_s"))),
        ("process wall (s)", lambda r: fmt(r["wall_s"])),
        ("peak RSS (MB)", lambda r: fmt(r["peak_rss_mb"], ".0f")),
        ("dev acc per seed", lambda r: _per_seed(r["runs"], "dev_acc")),
        ("test acc per seed", lambda r: _per_seed(r["runs"], "test_acc")),
    ]
    lines += ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in summaries:
        if r.get("exit") != 0:
            lines.append(f"| {r['variant']} | FAILED (exit {r.get('exit')}), see `{r.get('log')}` |")
            continue
        lines.append("| " + " | ".join(str(get(r)) for _, get in columns) + " |")
    pair_lines = []
    for t, h, what in PAIRS:
        if t not in by_name or h not in by_name:
            continue
        tr, hr = by_name[t], by_name[h]
        runs_h = {(x["seed"], x["rep"]): x for x in hr["runs"]}
        paired = [
            x["samples_per_s"] / runs_h[(x["seed"], x["rep"])]["samples_per_s"]
            for x in tr["runs"]
            if (x["seed"], x["rep"]) in runs_h
        ]
        acc_t, acc_h = _mean(tr["runs"], "test_acc"), _mean(hr["runs"], "test_acc")
        gap = (acc_t - acc_h) * 100 if acc_t is not None and acc_h is not None else None
        pair_lines.append(
            f"| {t} / {h} | {what} | {tr['samples_per_s'] / hr['samples_per_s']:.3f} "
            f"| {sps_range(paired, '.3f')} | {fmt(acc_t, '.4f')} vs {fmt(acc_h, '.4f')} ({fmt(gap, '+.2f')}) "
            f"| {'yes' if gap is not None and abs(gap) <= 0.5 else 'no'} "
            f"| {hr['wall_s'] / tr['wall_s']:.3f} | {tr['peak_rss_mb'] / hr['peak_rss_mb']:.3f} |"
        )
    if pair_lines:
        lines += [
            "",
            "| pair | what it compares | samples/s ratio (of medians) | per-run range (same seed, repeat) "
            "| test acc, mean over seeds (points) | equal accuracy (within 0.5 point) "
            "| time to a trained model: HF wall / tunelab wall | peak RSS tunelab / HF |",
            "|---|---|---|---|---|---|---|---|",
            *pair_lines,
        ]
    lines += [
        "",
        "samples/s of each run:",
        "",
        "| variant | "
        + " | ".join(f"s{seed} r{rep}" for seed in a.seed_list for rep in range(a.repeats))
        + " |",
        "|---|" + "---|" * (len(a.seed_list) * a.repeats),
    ]
    for r in summaries:
        runs = {(x["seed"], x["rep"]): x for x in r["runs"]}
        cells = [
            fmt(runs[(seed, rep)].get("samples_per_s")) if (seed, rep) in runs else "-"
            for seed in a.seed_list
            for rep in range(a.repeats)
        ]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    shas = {(r["seed"], r.get("rows_sha256")) for r in rows if r.get("rows_sha256")}
    same_rows = len(shas) == len(
        {seed for seed, _ in shas}
    )  # one fingerprint per seed (seeds split differently)
    n_rows = next((r["n_rows"] for r in rows if r.get("n_rows")), None)
    threads = {r.get("torch_threads") for r in rows if r.get("torch_threads")}
    lines += [
        "",
        f"- rows: {n_rows} ; identical train/dev/test rows on every variant of a seed: "
        f"{'yes' if same_rows else 'NO'} (sha256 {', '.join(f'seed {k} {v[:12]}' for k, v in sorted(shas))})",
        f"- torch threads in the subprocesses: {sorted(threads)}",
        "- CPU used by other processes during each run (avg cores; >0.1 means the number is disturbed): "
        + ", ".join(
            f"{r['variant']}/s{r['seed']}r{r['rep']} {r['foreign_cores']:.2f} (attempt {r['attempts']})"
            for r in rows
            if "foreign_cores" in r
        ),
        f"- raw data: `{rel(a.out)}/*.timings.json`, `results.json` and `ceiling.json`, logs next to them.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_tunelab_worker":
        sep = sys.argv.index("--")
        tunelab_worker(Path(sys.argv[2]), sys.argv[sep + 1 :])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        print(json.dumps(ceiling_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seeds", default="42,43", help="comma-separated; every variant runs every seed")
    p.add_argument("--config", type=Path, default=Path("examples/sentiment.yaml"))
    p.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated, run in this order; choose from {', '.join(VARIANTS)} (default: %(default)s)",
    )
    p.add_argument(
        "--max-wait-idle",
        type=float,
        default=600,
        help="before each variant wait up to this many seconds for other processes to go quiet (0 = don't)",
    )
    p.add_argument(
        "--max-foreign-cores",
        type=float,
        default=0.1,
        help="rerun a variant when other processes used more than this many cores during it",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the variant list this many times per seed, round-robin; medians",
    )
    p.add_argument("--retries", type=int, default=2, help="reruns allowed per disturbed variant")
    p.add_argument("--out", type=Path, default=BENCH / "out", help="run dirs, logs, raw timings")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument(
        "--from-results",
        action="store_true",
        help="run nothing: re-render the table from --out's results.json and meta.json (same arguments)",
    )
    a = p.parse_args()
    a.out = a.out.resolve()
    names = [n.strip() for n in a.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    a.native_bf16 = cpu_has_native_bf16()
    if not a.native_bf16:  # bf16 would be ~100x slower here: not a comparison anyone would run
        names = [n for n in names if VARIANTS[n].precision != "bf16"]
    a.seed_list = [int(x) for x in a.seeds.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)

    if a.from_results:  # re-render the last run's table (e.g. after a change to this report)
        rows = json.loads((a.out / "results.json").read_text())
        meta = json.loads((a.out / "meta.json").read_text())
        a.model, code_after = meta.pop("model"), meta.pop("code_after")
        report = render(rows, a, meta, code_after)
        print(report)
        harness.write_section("train", report, a.results)
        return
    env = harness.child_env(offline=True)
    prov = harness.provenance(with_files=True)
    common = common_overrides(a)
    rows = [
        run_variant(name, a, common, env, seed, rep)
        for seed in a.seed_list
        for rep in range(a.repeats)
        for name in names
    ]
    tokens = round(statistics.median(r["padded_tokens"] / r["steps"] for r in rows if r.get("padded_tokens")))
    dtypes = "fp32,bf16" if a.native_bf16 else "fp32"
    model_name = load_config(a.config).model.name_or_path
    ceiling_cmd = [sys.executable, str(Path(__file__).resolve()), "_ceiling", model_name, str(tokens), dtypes]
    ceiling_log = a.out / "ceiling.log"
    harness.require_ok(
        harness.run(ceiling_cmd, ceiling_log, env=env, stdout=a.out / "ceiling.json"), "ceiling"
    )
    a.model = json.loads((a.out / "ceiling.json").read_text())
    for r in rows:
        r["gflops"] = step_gflop(r, a.model)
    code_after = harness.source_state(with_files=True)
    threads = sorted({r["torch_threads"] for r in rows if r.get("torch_threads")})
    prov["machine"]["torch_threads"] = f"{threads} (torch's default, not set)"
    (a.out / "results.json").write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    meta = {**prov, "code_after": code_after, "model": a.model}
    (a.out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    report = render(rows, a, prov, code_after)
    print(report)
    harness.write_section("train", report, a.results)
    print(f"wrote the bench:train section of {a.results}", file=sys.stderr)
    if any(r.get("exit") != 0 for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
