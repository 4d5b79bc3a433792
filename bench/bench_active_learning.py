"""Active learning on Rotten Tomatoes and BBC News: test accuracy vs labels used, against random sampling.

A simulated annotator, per dataset, one seed: from the prepared train split a seeded pool of POOL rows
and, disjoint from it, a starting set of K rows per label; a seeded subset of TEST rows of the test
split. Round 0 trains MiniLM (``classification``, ``full``) on the starting set with ``tunelab train``'s
workflow (``workflows.train_run``); each later round adds N pool rows chosen by a strategy, with their
true labels, and trains again from the pretrained model. ``entropy``, ``margin`` and ``coreset`` choose
with ``tunelab label suggest``'s function (``evaluation.suggest.suggest``) on the previous round's run,
given the whole pool file (it leaves the rows already labelled out itself); ``random`` draws N
unlabelled pool rows with a seeded RNG. Every strategy starts from the same round-0 model.

Each training run takes max(MIN_STEPS, EPOCHS x rows / batch) optimizer steps, so every strategy gets
the same compute at the same label count; dev is the labelled set itself (no labels beyond the counted
ones), scored once at the end, so ``best/`` is the last model. The datasets run side by side, one
process each, one torch thread. ``SIZES`` is the full simulation; ``--small`` (the recorded run) took
47 (RT) and 56 (BBC) minutes on a 2-core machine that other jobs kept busy (1.7 other cores).

    python bench/bench_active_learning.py   # RESULTS.md's section and docs/img/active-learning.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
from harness import ROOT

STRATEGIES = ("random", "entropy", "margin", "coreset")
ASSETS = {"rt": "rotten-tomatoes", "bbc": "bbc-news"}
SIZES: dict[str, dict[str, int]] = {
    "rt": {"pool": 1000, "test": 500, "k": 8, "n": 32, "rounds": 4, "max_length": 64},
    "bbc": {"pool": 1000, "test": 500, "k": 8, "n": 32, "rounds": 4, "max_length": 128},
}
SMALL: dict[str, dict[str, int]] = {  # --small: the sizes a busy shared machine affords
    "rt": {"pool": 500, "test": 300, "rounds": 3},
    "bbc": {"pool": 400, "test": 200, "rounds": 3, "max_length": 64},
}
EPOCHS, MIN_STEPS, BATCH, LR, SEED = 4, 20, 16, 1e-4, 13
PNG = ROOT / "docs" / "img" / "active-learning.png"


def sizes(dataset: str, small: bool) -> dict[str, int]:
    """The dataset's simulation sizes, with the ``--small`` overrides when asked."""
    return SIZES[dataset] | (SMALL[dataset] if small else {})


def read_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [(row["text"], row["label"]) for row in csv.DictReader(fh)]


def write_rows(path: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("text", "label")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows if len(header) == 2 else [(text,) for text, _ in rows])
    return path


def split(dataset: str, size: dict[str, int], data_root: Path) -> dict[str, list[tuple[str, str]]]:
    """Seeded pool, starting set (K per label, disjoint from the pool) and test subset."""
    from tunelab.assets import prepare_dataset

    out = data_root / ASSETS[dataset]
    if not (out / "train.csv").is_file():
        prepare_dataset(ASSETS[dataset], out)
    rng = random.Random(SEED)
    train, test = read_rows(out / "train.csv"), read_rows(out / "test.csv")
    rng.shuffle(train)
    pool, rest = train[: size["pool"]], train[size["pool"] :]
    start = [
        row
        for label in sorted({label for _, label in rest})
        for row in [r for r in rest if r[1] == label][: size["k"]]
    ]
    return {"pool": pool, "start": start, "test": rng.sample(test, size["test"])}


def train_round(
    labelled: list[tuple[str, str]], test: Path, work: Path, labels: list[str], max_length: int
) -> dict[str, Any]:
    """Train MiniLM on ``labelled`` from the pretrained weights; its test metrics and the run dir."""
    import yaml

    from tunelab.workflows import train_run

    train_file = write_rows(work / "labelled.csv", labelled)
    steps = max(MIN_STEPS, math.ceil(EPOCHS * len(labelled) / BATCH))
    raw = {
        "model": {"name_or_path": "minilm-l6"},
        "data": {"train_file": str(train_file), "dev_file": str(train_file), "test_file": str(test)},
        "task": {"name": "classification", "params": {"max_length": max_length, "labels": labels}},
        "train": {
            "output_dir": str(work / "run"),
            "seed": SEED,
            "lr": LR,
            "warmup_ratio": 0.1,
            "batch_size": BATCH,
            "eval_batch_size": 64,
            "max_steps": steps,
            "eval_steps": steps,
            "save_steps": 100000,
            "logging_steps": 1000,
        },
    }
    (work / "cfg.yaml").write_text(yaml.safe_dump(raw))
    t0 = time.perf_counter()
    train_run(work / "cfg.yaml", overwrite=True)
    seconds = time.perf_counter() - t0
    test_metrics = json.loads((work / "run" / "best" / "metrics.json").read_text())["test"]
    return {
        "labels": len(labelled),
        "accuracy": test_metrics["accuracy"],
        "macro_f1": test_metrics["macro_f1"],
        "steps": steps,
        "train_s": seconds,
    }


def worker(dataset: str, a: argparse.Namespace) -> dict[str, Any]:
    """The learning curve of every strategy on ``dataset``."""
    import torch

    from tunelab.evaluation.suggest import suggest
    from tunelab.inference.artifact import load_artifact

    torch.set_num_threads(a.threads)
    size = sizes(dataset, a.small)
    data = split(dataset, size, a.data_root)
    labels = sorted({label for _, label in data["start"]})
    truth = dict(data["pool"])
    with tempfile.TemporaryDirectory(dir=harness.OUT) as tmp:
        root = Path(tmp)
        test, pool = (
            write_rows(root / "test.csv", data["test"]),
            write_rows(root / "pool.csv", data["pool"], ("text",)),
        )
        (root / "start").mkdir()
        first = train_round(data["start"], test, root / "start", labels, size["max_length"])
        curves: dict[str, list[dict[str, Any]]] = {}
        for strategy in a.strategies:
            rng, labelled, previous, curve = random.Random(SEED), list(data["start"]), root / "start", [first]
            for r in range(1, size["rounds"] + 1):
                t0 = time.perf_counter()
                if strategy == "random":
                    seen = {text for text, _ in labelled}
                    picked = rng.sample([text for text, _ in data["pool"] if text not in seen], size["n"])
                else:
                    found = suggest(load_artifact(previous / "run"), pool, size["n"], strategy)
                    picked = [row["text"] for row in found]
                pick_s = time.perf_counter() - t0
                labelled += [(text, truth[text]) for text in picked]
                work = root / f"{strategy}-{r}"
                work.mkdir()
                curve.append(
                    train_round(labelled, test, work, labels, size["max_length"]) | {"pick_s": pick_s}
                )
                if previous != root / "start":
                    shutil.rmtree(previous)
                previous = work
                point = curve[-1]
                line = (
                    f"{dataset} {strategy} round {r}: {point['labels']} labels, acc {point['accuracy']:.3f}"
                )
                print(line, file=sys.stderr)  # noqa: T201
            curves[strategy] = curve
    counts = {label: sum(1 for _, gold in data["test"] if gold == label) for label in labels}
    return {
        "dataset": dataset,
        "sizes": size,
        "curves": curves,
        "majority": max(counts.values()) / len(data["test"]),
    }


def mean_gain(curve: list[dict[str, Any]], random_curve: list[dict[str, Any]]) -> float:
    """Mean accuracy difference to random over the rounds after round 0 (same label counts)."""
    diffs = [c["accuracy"] - r["accuracy"] for c, r in zip(curve[1:], random_curve[1:], strict=True)]
    return sum(diffs) / len(diffs)


def render(results: list[dict[str, Any]], prov: dict[str, Any], code_after: dict[str, Any]) -> str:
    """Markdown: sizes, then per dataset one row per strategy with test accuracy at each label count."""
    lines = [
        "## Active learning: accuracy vs labels used (RT, BBC; MiniLM)",
        "",
        *harness.provenance_lines(prov, code_after),
        f"- {harness.CONTENTION_NOTE}",
        "- one seed; every strategy starts from the same round-0 model; each round retrains MiniLM from "
        f"the pretrained weights for max({MIN_STEPS}, {EPOCHS} x rows / {BATCH}) steps at lr {LR}; "
        "scores are test accuracy",
        "",
    ]
    for result in results:
        size, curves = result["sizes"], result["curves"]
        counts = [str(point["labels"]) for point in next(iter(curves.values()))]
        lines += [
            f"**{result['dataset']}**: pool {size['pool']}, test {size['test']} "
            f"(majority {result['majority']:.3f}), "
            f"start {size['k']} per label, +{size['n']} per round, {size['rounds']} rounds, "
            f"texts cut to {size['max_length']} tokens, peak RSS {result['peak_rss_mb']:.0f} MB, "
            f"wall {result['wall_s'] / 60:.1f} min, other cores {result['foreign_cores']:.2f}",
            "",
            f"| strategy | {' | '.join(f'{n} labels' for n in counts)} "
            "| mean gain vs random | pick s / round |",
            "|---|" + "---:|" * (len(counts) + 2),
        ]
        for strategy, curve in curves.items():
            pick = [point["pick_s"] for point in curve[1:]]
            gain = f"{mean_gain(curve, curves['random']):+.3f}" if "random" in curves else "-"
            cells = " | ".join(format(p["accuracy"], ".3f") for p in curve)
            lines.append(f"| {strategy} | {cells} | {gain} | {sum(pick) / len(pick):.0f} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """One panel per dataset: test accuracy vs labels used, a line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        for strategy, curve in result["curves"].items():
            style = {"linestyle": "--", "color": "gray"} if strategy == "random" else {}
            ax.plot(
                [p["labels"] for p in curve],
                [p["accuracy"] for p in curve],
                marker="o",
                label=strategy,
                **style,
            )
        ax.set(
            title=f"{result['dataset']} (MiniLM, pool {result['sizes']['pool']})",
            xlabel="labels used",
            ylabel="test accuracy",
        )
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="rt,bbc", help="comma-separated: rt, bbc")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    parser.add_argument("--small", action="store_true", help="the SMALL sizes (a busy shared machine)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=harness.OUT / "active_learning.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    a = parser.parse_args()
    a.strategies = a.strategies.split(",")
    harness.OUT.mkdir(parents=True, exist_ok=True)
    if a.worker:
        print(json.dumps(worker(a.worker, a)))  # noqa: T201  (the parent reads stdout)
        return
    prov = harness.provenance(threads=a.threads, with_files=True)
    args = sys.argv[1:]

    def run(dataset: str) -> dict[str, Any]:
        cmd = [sys.executable, __file__, *args, "--worker", dataset]
        env = harness.child_env(a.threads, offline=True)
        return harness.run_worker(cmd, harness.OUT / "active_learning" / f"{dataset}.log", dataset, env=env)

    datasets = a.datasets.split(",")
    with ThreadPoolExecutor(max_workers=len(datasets)) as pool:  # one process per dataset, side by side
        results = list(pool.map(run, datasets))
    a.out.write_text(json.dumps(results, indent=2))
    harness.write_section("active-learning", render(results, prov, harness.source_state(with_files=True)))
    plot(results, PNG)
    print(render(results, prov, harness.source_state()))  # noqa: T201


if __name__ == "__main__":
    main()
