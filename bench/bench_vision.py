"""Vision transfer on Fashion-MNIST: a small ViT pretrained by masked image modelling vs random init,
beside a pixel logistic regression on the same labelled images.

    OMP_NUM_THREADS=1 python bench/bench_vision.py [--mim-steps 5000] [--ft-steps 1600 3200]
        [--seeds 42 7 8] [--parallel 2] [--starts mim scratch] [--runs DIR]

Steps, each a ``tunelab`` subprocess on one thread, on the shipped ``fashion-mnist`` asset (Debian's
``dataset-fashion-mnist``, prepared into data/fashion-mnist as the examples read it):

1. ``examples/vision/mim_fashion.yaml``: SimMIM pretraining of a ViT (28x28 images, patch 7 -> 16
   patches, hidden 128, 4 layers, 4 heads) on the unlabelled train images (98% of the 60k; 2% is the
   dev split that picks best/), ``--mim-steps`` steps of 128 images;
2. ``examples/vision/finetune_fashion.yaml`` (from the MIM run's best/) and
   ``examples/vision/finetune_fashion_scratch.yaml`` (the same architecture, random init, same seed) at
   1% of the labels (``data.k_shot`` 60 per class = 600 images) and 10% (600 per class = 6,000), for
   ``--ft-steps`` steps (1%, 10%) of 64 augmented images (random crop, flip), ``--parallel`` runs at a
   time; best/ is chosen on the 2,040 dev images split off the train images and scored once on the
   whole 10,000-image t10k test set; at 1% each of ``--seeds`` (``train.seed``: the 600 images drawn,
   the dev split, a random init and the data order) is a run of its own, and the table adds their mean
   (600 images vary far more with the draw than 6,000 do; the 10% runs use the first seed);
3. the baseline: scikit-learn's logistic regression (C=1) on raw pixels in [0, 1], fitted on exactly
   the labelled images each fine-tune trains on (the task's own ``load_data`` with the same config and
   seed), for each seed, and scored on the same test set;
4. ``tunelab export --quantize int8`` of the pretrained 10% model, whose parity report scores fp32 and
   int8 on that run's dev images.

``--starts scratch`` runs only the random-init fine-tunes (no pretraining) and writes no section. A run
dir that already holds ``best/metrics.json`` is reused only when its ``run_config.yaml`` is the config
this bench would run (see ``stale_keys``): an interrupted bench resumes and the pretrained backbone is
trained once, but a dir left by other settings (e.g. other ``--ft-steps``) is trained again; a reused
run's wall time is its run dir's (run_config.yaml written -> last metrics line). The fine-tunes start
longest first (10% of the labels). Results go between the ``bench:vision`` markers of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

import harness
from harness import ROOT

OUT = harness.OUT / "vision"
DATA = ROOT / "data" / "fashion-mnist"
EXAMPLES = ROOT / "examples" / "vision"
SHOTS = {"1%": 60, "10%": 600}  # labelled train images per class (10 classes)
FT_BATCH, MIM_BATCH = 64, 128  # the examples' train.batch_size
STARTS = {"mim": "finetune_fashion.yaml", "scratch": "finetune_fashion_scratch.yaml"}
START_NAMES = {"mim": "MIM-pretrained", "scratch": "random init"}
DEFAULT_SEED = 42  # train.seed's default: its runs keep the run dir names of the one-seed bench


def tunelab(*args: str | Path) -> list[str]:
    """The command line of ``tunelab ARGS`` with this interpreter."""
    return [sys.executable, "-m", "tunelab.cli", *map(str, args)]


def stale_keys(run_dir: Path, config: list[str | Path]) -> list[str]:
    """The dotted keys in which ``run_dir``'s ``run_config.yaml`` differs from ``config`` (an example
    and its overrides) as ``tunelab train`` would resolve it: the keys a resume compares
    (``config_differences``: where the run lives, how often it logs or saves are not among them) plus
    ``data.test_file``, which the table reports on."""
    from tunelab.config import load_config
    from tunelab.training import resolve
    from tunelab.training.checkpoint import config_differences

    example, *overrides = map(str, config)
    # No data row read (count_labels=False): the k_shot rows are balanced, so the selection metric is
    # the task's main one, as the run resolved it from its counted labels.
    current = resolve(load_config(Path(example), overrides), count_labels=False).cfg.model_dump(mode="json")
    saved = yaml.safe_load((run_dir / "run_config.yaml").read_text(encoding="utf-8"))
    test_file = [] if saved["data"]["test_file"] == current["data"]["test_file"] else ["data.test_file"]
    return config_differences(saved, current) + test_file


def train(example: Path, run_dir: Path, *overrides: str, stopped_ok: bool = False) -> dict[str, Any]:
    """Train ``example`` into ``run_dir`` (reused when it finished before with the same config): wall
    time and logged steps.

    ``stopped_ok`` also reuses a run stopped early (SIGTERM: it keeps the best/ of its last evaluation),
    whose dev metrics are then best/'s record.
    """
    done, best = run_dir / "best" / "metrics.json", run_dir / "best" / "tunelab_run.json"
    config = [example, "--train.output_dir", run_dir, *overrides]
    reuse = done.is_file() or (stopped_ok and best.is_file())
    if reuse and (stale := stale_keys(run_dir, config)):
        print(f"{run_dir.name}: trained again, its config differs in {', '.join(stale)}", flush=True)
        reuse = False
    row: dict[str, Any] = {"reused": reuse}
    if not reuse:
        cmd = tunelab("train", example, "--overwrite", *config[1:])
        row |= harness.require_ok(
            harness.run(cmd, run_dir.with_suffix(".log"), env=harness.child_env(1)), run_dir.name
        )
    else:
        started = (run_dir / "run_config.yaml").stat().st_mtime
        row["wall_s"] = (run_dir / "metrics.jsonl").stat().st_mtime - started
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    record = json.loads(best.read_text())
    row |= {"steps": max(line["step"] for line in lines), "best_step": record["step"]}
    row |= json.loads(done.read_text()) if done.is_file() else {"dev": record["dev_metrics"]}
    return row


def export_int8(run_dir: Path) -> dict[str, Any]:
    """``tunelab export --quantize int8`` with its parity report on the run's dev images."""
    out = run_dir.with_suffix(".int8.json")
    if not out.is_file():
        cmd = tunelab(
            "export", run_dir, "--to", run_dir.parent / f"{run_dir.name}-int8", "--quantize", "int8",
            "--threads", "1", "--overwrite",
        )  # fmt: skip
        row = harness.run(cmd, run_dir.with_suffix(".int8.log"), env=harness.child_env(1), stdout=out)
        harness.require_ok(row, f"int8 export of {run_dir.name}")
    return json.loads(out.read_text())


def share(shots: int) -> str:
    """``1%`` / ``10%``: the share of the labels ``shots`` per class is."""
    return next(name for name, n in SHOTS.items() if n == shots)


def finetune(runs: Path, start: str, shots: int, seed: int, ft_steps: int) -> dict[str, Any]:
    """One fine-tune of ``start`` (mim or scratch) on ``shots`` images per class drawn with ``seed``."""
    run_dir = runs / (f"ft-{start}-{shots}" + ("" if seed == DEFAULT_SEED else f"-s{seed}"))
    overrides = ["--data.k_shot", str(shots), "--train.seed", str(seed), "--train.max_steps", str(ft_steps)]
    overrides += ["--train.eval_steps", str(ft_steps // 5), "--train.save_steps", str(ft_steps)]
    if start == "mim":
        overrides += ["--model.name_or_path", str(runs / "mim" / "best")]
    row = train(EXAMPLES / STARTS[start], run_dir, *overrides)
    return {"start": START_NAMES[start], "labels": share(shots), "shots": shots, "seed": seed, **row}


def pixel_baseline(shots: int, seed: int) -> dict[str, Any]:
    """Logistic regression on raw pixels, fitted on the fine-tunes' labelled images, scored on their test set.

    The rows come from the task's own ``load_data`` under the random-init example's config with
    ``data.k_shot`` = ``shots`` and ``train.seed`` = ``seed`` (the same dev split and few-shot draw as
    the fine-tunes of that seed).
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from tunelab.config import load_config
    from tunelab.data.images import image_array
    from tunelab.training import resolve

    overrides = ["--data.k_shot", str(shots), "--train.seed", str(seed)]
    plan = resolve(load_config(EXAMPLES / STARTS["scratch"], overrides))
    data = plan.task.load_data(plan.cfg.data, plan.task_params, plan.cfg.train.seed)

    def xy(split: Any) -> tuple[Any, list[str]]:
        return np.stack([image_array(raw).reshape(-1) for raw in split["image"]]) / 255.0, split["label"]

    (x, y), (x_test, y_test) = xy(data.train), xy(data.test)
    started = time.perf_counter()
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    wall = time.perf_counter() - started
    predicted = model.predict(x_test)
    test = {
        "accuracy": float(np.mean(predicted == np.asarray(y_test))),
        "macro_f1": float(f1_score(y_test, predicted, average="macro")),
    }
    start = "pixel logistic regression"
    row = {"start": start, "labels": share(shots), "shots": shots, "seed": seed, "test": test}
    return row | {"wall_s": wall}


def bench(
    runs: Path, starts: list[str], mim_steps: int, ft_steps: dict[int, int], seeds: list[int], parallel: int
) -> dict[str, Any]:
    """Pretrain (when a start needs it), fine-tune each (start, labels) pair, fit the pixel baseline,
    export one fine-tune to int8."""
    if not (DATA / "labels.txt").is_file():
        cmd = tunelab("data", "prepare", "fashion-mnist", DATA)
        harness.require_ok(harness.run(cmd, OUT / "prepare.log", env=harness.child_env()), "prepare")
    mim = None
    if "mim" in starts:
        mim = train(
            EXAMPLES / "mim_fashion.yaml",
            runs / "mim",
            "--train.max_steps", str(mim_steps), "--train.eval_steps", str(mim_steps // 4),
            "--train.save_steps", str(mim_steps), stopped_ok=True,
        )  # fmt: skip
    runs_of = {shots: seeds if shots == SHOTS["1%"] else seeds[:1] for shots in SHOTS.values()}
    jobs = [
        (start, shots, seed)
        for shots in sorted(SHOTS.values(), reverse=True)
        for seed in runs_of[shots]
        for start in starts
    ]
    with ThreadPoolExecutor(parallel) as pool:  # longest (10%) first
        rows = list(pool.map(lambda job: finetune(runs, *job, ft_steps[job[1]]), jobs))
    rows += [pixel_baseline(shots, seed) for shots, seeds_at in runs_of.items() for seed in seeds_at]
    rows.sort(key=lambda row: (row["shots"], row["start"] == "pixel logistic regression"))  # 1% first
    int8 = export_int8(runs / f"ft-mim-{SHOTS['10%']}")["parity"] if "mim" in starts else None
    result = {"mim": mim, "mim_steps": mim_steps, "finetune": rows, "int8": int8, "ft_steps": ft_steps}
    result["means"] = means(rows)
    return result | {"parallel": parallel}


def means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of test accuracy and macro-F1 per (labels, start) with more
    than one seed."""
    import statistics

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["labels"], row["start"]), []).append(row)
    return [
        {
            "labels": labels,
            "start": start,
            "seeds": len(group),
            "accuracy": statistics.mean(acc := [row["test"]["accuracy"] for row in group]),
            "accuracy_sd": statistics.stdev(acc),
            "macro_f1": statistics.mean(row["test"]["macro_f1"] for row in group),
        }  # fmt: skip
        for (labels, start), group in groups.items()
        if len(group) > 1
    ]


def _mean_row(mean: dict[str, Any]) -> str:
    """One table line: a (labels, start) mean over seeds."""
    return (
        f"| **{mean['labels']}** | **{mean['start']}** | mean of {mean['seeds']} | | "
        f"**{mean['accuracy']:.4f}** ± {mean['accuracy_sd']:.4f} | {mean['macro_f1']:.4f} | | |"
    )


def _row(row: dict[str, Any]) -> str:
    """One table line: a fine-tune (steps, epochs, dev, wall) or the pixel baseline (fit time)."""
    images = row["shots"] * 10
    if "steps" in row:
        steps = f"{row['steps']:,} ({row['steps'] * FT_BATCH / images:.0f} epochs)"
        dev = f"{row['dev']['accuracy']:.4f} (step {row['best_step']})"
        wall = f"{row['wall_s'] / 60:.1f} min" + (" (reused)" if row["reused"] else "")
    else:
        steps, dev, wall = "-", "-", f"{row['wall_s']:.1f} s fit"
    return (
        f"| {row['labels']} ({images:,} images) | {row['start']} | {row['seed']} | {steps} "
        f"| {row['test']['accuracy']:.4f} | {row['test']['macro_f1']:.4f} | {dev} | {wall} |"
    )


def markdown(result: dict[str, Any], prov: dict[str, Any]) -> str:
    """The RESULTS.md section: the accuracy table, the pretraining run and the int8 export."""
    mim, int8 = result["mim"], result["int8"]
    lines = [
        "## Vision transfer: MIM-pretrained ViT vs random init vs pixel logistic regression on "
        "Fashion-MNIST (`bench/bench_vision.py`)",
        "",
        *harness.provenance_lines(prov),
        "- pretraining: SimMIM (mask ratio 0.6) of a ViT (28x28, patch 7 -> 16 patches, hidden 128, "
        "4 layers, 4 heads, 0.8M parameters) on 58,800 unlabelled train images, "
        f"{mim['steps']:,} steps of {MIM_BATCH} images ({mim['steps'] * MIM_BATCH / 58800:.1f} epochs) "
        + (  # a reused run may have been resumed: its run dir's times cover the last start only
            "on 1 thread, by an earlier run of this bench (reused run dir: its wall time is in the "
            "section it was measured for, in this file's history)"
            if mim["reused"]
            else f"in {mim['wall_s'] / 60:.0f} min wall on 1 thread (a shared, loaded machine)"
        )
        + (
            f", stopped (SIGTERM) for the time budget before the planned {result['mim_steps']:,}"
            if mim["steps"] < result["mim_steps"]
            else ""
        )
        + "; best/ (used below) "
        f"from step {mim['best_step']}, dev masked-pixel L1 {mim['dev']['reconstruction_loss']:.4f}",
        f"- fine-tuning (`examples/vision/finetune_fashion*.yaml`): batches of {FT_BATCH} images, random "
        "crop (pad 2) and flip, AdamW lr 1e-3, weight decay 0.05, 10% warmup then linear decay; the "
        "pretrained start adds layer-wise lr decay 0.75 (`freeze` method); labelled rows are "
        "`data.k_shot` per class drawn with the run's seed (`train.seed`, which also draws the 2,040 dev "
        "images split off train that pick best/, the random init and the data order); test = the whole "
        f"10,000-image t10k set; {result['parallel']} fine-tunes ran at a time",
        "- pixel logistic regression: scikit-learn `LogisticRegression(C=1)` on the raw pixels in [0, 1] "
        "of exactly the fine-tunes' labelled images (the same seed's draw), same test set; mean rows: "
        "mean ± sample standard deviation over the seeds",
        "",
        "| labels | start | seed | steps (epochs) | test accuracy | test macro-F1 | dev accuracy (best/) "
        "| wall |",
        "|---|---|---|---|---|---|---|---|",
        *map(_row, result["finetune"]),
        *map(_mean_row, result["means"]),
    ]
    before, after = int8["before"], int8["after"]
    lines += [
        "",
        "int8 export (`tunelab export --quantize int8`) of the MIM-pretrained 10% model, its parity "
        f"report on that run's dev images: accuracy {before['metrics']['accuracy']:.4f} (fp32) -> "
        f"{after['metrics']['accuracy']:.4f} (int8), weights {before['size_mb']:.2f} MB -> "
        f"{after['size_mb']:.2f} MB, batch-32 latency {before['latency_ms']['32']:.0f} -> "
        f"{after['latency_ms']['32']:.0f} ms (1 thread).",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the bench and write its RESULTS.md section (when both starts ran)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mim-steps", type=int, default=5000)
    parser.add_argument(
        "--ft-steps", type=int, nargs=2, default=[1600, 3200], metavar=("AT_1PCT", "AT_10PCT"),
        help="fine-tune steps of 64 images at 1%% and at 10%% of the labels",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[DEFAULT_SEED],
        help="train.seed of the 1%% fine-tunes and pixel baselines, one run each (10%%: the first)",
    )  # fmt: skip
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--starts", nargs="+", choices=sorted(STARTS), default=sorted(STARTS))
    parser.add_argument("--runs", type=Path, default=OUT)
    args = parser.parse_args()
    os.chdir(ROOT)  # the examples' data paths are relative to the repository
    prov = harness.provenance(threads=1)
    ft_steps = dict(zip(SHOTS.values(), args.ft_steps, strict=True))
    result = bench(args.runs.resolve(), args.starts, args.mim_steps, ft_steps, args.seeds, args.parallel)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"result-{'-'.join(args.starts)}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if set(args.starts) == set(STARTS):
        harness.write_section("vision", markdown(result, prov))


if __name__ == "__main__":
    main()
