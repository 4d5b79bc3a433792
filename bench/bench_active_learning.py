"""Active learning on Rotten Tomatoes and BBC News: test accuracy vs labels used, against random sampling.

A simulated annotator, per dataset and seed: from the prepared train split a seeded pool of POOL rows
(the same for every seed) and, disjoint from it, a starting set of K rows per label drawn with the
seed; a seeded subset of TEST rows of the test split. Each round the learner is trained afresh on the
labelled rows; then N pool rows chosen by a strategy join them, with their true labels. ``entropy``,
``margin`` and ``coreset`` choose with ``tunelab label suggest``'s functions (``evaluation.active``)
on the current model's pool probabilities or embeddings; ``random`` draws N unlabelled pool rows with
the seed's RNG. Every strategy of a seed starts from the same starting set.

The learner is MiniLM (``minilm-l6``, all-MiniLM-L6-v2) kept frozen: its L2-normalised mean-pooled
sentence embedding (``models.architectures.mean_pool``, what ``label suggest``'s coreset uses) under
a logistic-regression head refitted from scratch each round, scikit-learn's
``LogisticRegression(class_weight="balanced")`` (L2, C=1; balanced like tunelab's own
``class_weights: auto`` on skewed labels). It needs no dev set and no step count, so every label count
gets a converged model. Unweighted, the head follows the labelled rows' label mix, and uncertainty
picks are often mostly one or two labels: the ``-unweighted`` strategies measure that ablation.

Not full fine-tuning: with the machine loaded, one MiniLM step on 16 rows took 3.4 s, and 100 steps on
16 RT rows scored 0.413 on test after fitting those rows perfectly (the few-sample instability of
fine-tuning). Several seeds of 4 strategies over many rounds would take hours; with the encoder
frozen, each text is embedded once per dataset and a round takes milliseconds.

    python bench/bench_active_learning.py   # RESULTS.md's section and docs/img/active-learning.png
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
from harness import ROOT

# "-unweighted": the same strategy under an unweighted head (the ablation behind class_weight="balanced")
STRATEGIES = ("random", "entropy", "margin", "coreset", "random-unweighted", "entropy-unweighted")
UNWEIGHTED = "-unweighted"
ASSETS = {"rt": "rotten-tomatoes", "bbc": "bbc-news"}
SIZES: dict[str, dict[str, int]] = {
    "rt": {"pool": 1500, "test": 600, "k": 4, "n": 24, "rounds": 10, "max_length": 64},
    "bbc": {"pool": 1000, "test": 400, "k": 4, "n": 24, "rounds": 10, "max_length": 128},
}
SEEDS, POOL_SEED, EMBED_BATCH = (11, 12, 13, 14, 15), 13, 32
PNG = ROOT / "docs" / "img" / "active-learning.png"
STYLES: dict[str, dict[str, Any]] = {  # margin dashed over entropy: with two labels they pick the same rows
    "random": {"linestyle": "--", "color": "gray", "marker": "o"},
    "entropy": {"marker": "o"},
    "margin": {"marker": "s", "linestyle": "-."},
    "coreset": {"marker": "^"},
}


def read_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [(row["text"], row["label"]) for row in csv.DictReader(fh)]


def split(dataset: str, size: dict[str, int], data_root: Path, seeds: list[int]) -> dict[str, Any]:
    """Seeded pool and test subset; per seed a starting set of K rows per label, disjoint from the pool."""
    from tunelab.assets import prepare_dataset

    out = data_root / ASSETS[dataset]
    if not (out / "train.csv").is_file():
        prepare_dataset(ASSETS[dataset], out)
    rng = random.Random(POOL_SEED)
    train, test = read_rows(out / "train.csv"), read_rows(out / "test.csv")
    rng.shuffle(train)
    pool, rest = train[: size["pool"]], train[size["pool"] :]
    labels = sorted({label for _, label in train})
    starts = {
        seed: [
            row
            for label in labels
            for row in random.Random(seed).sample([r for r in rest if r[1] == label], size["k"])
        ]
        for seed in seeds
    }
    return {"pool": pool, "starts": starts, "test": rng.sample(test, size["test"]), "labels": labels}


def embed(texts: list[str], max_length: int) -> Any:
    """(N, 384) L2-normalised mean-pooled MiniLM embeddings, batched by length."""
    import numpy as np
    import torch

    from tunelab.models.architectures import mean_pool
    from tunelab.models.load import load_encoder, resolve_model

    model, tokenizer = load_encoder(resolve_model("minilm-l6"))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), EMBED_BATCH):
            rows = order[start : start + EMBED_BATCH]
            batch = tokenizer(
                [texts[i] for i in rows],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            out[rows] = mean_pool(hidden, batch["attention_mask"]).numpy()
    return out


def pick(
    strategy: str, model: Any, pool_x: Any, labelled_x: Any, unlabelled: list[int], n: int, rng: random.Random
) -> list[int]:
    """Pool indices (into ``pool_x``) of the ``n`` rows ``strategy`` asks to label next."""
    import torch

    from tunelab.evaluation.active import coreset_picks, uncertainty_picks

    if strategy == "random":
        return rng.sample(unlabelled, n)
    if strategy == "coreset":
        picks, _ = coreset_picks(torch.from_numpy(pool_x[unlabelled]), torch.from_numpy(labelled_x), n)
    else:
        picks, _ = uncertainty_picks(strategy, model.predict_proba(pool_x[unlabelled]), n)
    return [unlabelled[i] for i in picks.tolist()]


def curve(
    strategy: str, seed: int, size: dict[str, int], x: dict[str, Any], y: dict[str, Any]
) -> list[dict[str, Any]]:
    """Test accuracy after each round of one strategy and seed."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    base, weights = strategy.removesuffix(UNWEIGHTED), None if strategy.endswith(UNWEIGHTED) else "balanced"
    rng, chosen, points = random.Random(seed), [], []
    for r in range(size["rounds"] + 1):
        train_x = np.concatenate([x["start"], x["pool"][chosen]])
        train_y = np.concatenate([y["start"], y["pool"][chosen]])
        model = LogisticRegression(class_weight=weights).fit(train_x, train_y)
        points.append(
            {"labels": len(train_y), "accuracy": float((model.predict(x["test"]) == y["test"]).mean())}
        )
        if r < size["rounds"]:
            t0 = time.perf_counter()
            taken = set(chosen)
            unlabelled = [i for i in range(len(y["pool"])) if i not in taken]
            chosen += pick(base, model, x["pool"], train_x, unlabelled, size["n"], rng)
            points[-1]["pick_s"] = time.perf_counter() - t0
    return points


def worker(dataset: str, a: argparse.Namespace) -> dict[str, Any]:
    """Every strategy's learning curve on ``dataset``, one per seed."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    torch.set_num_threads(a.threads)
    size = SIZES[dataset]
    data = split(dataset, size, a.data_root, a.seeds)
    t0 = time.perf_counter()
    texts = [t for t, _ in data["pool"]] + [t for t, _ in data["test"]]
    texts += [t for seed in a.seeds for t, _ in data["starts"][seed]]
    vectors = dict(zip(texts, embed(texts, size["max_length"]), strict=True))
    embed_s = time.perf_counter() - t0

    def arrays(rows: list[tuple[str, str]]) -> tuple[Any, Any]:
        return np.stack([vectors[t] for t, _ in rows]), np.asarray([label for _, label in rows])

    (pool_x, pool_y), (test_x, test_y) = arrays(data["pool"]), arrays(data["test"])
    curves: dict[str, list[list[dict[str, Any]]]] = {s: [] for s in a.strategies}
    for seed in a.seeds:
        start_x, start_y = arrays(data["starts"][seed])
        x = {"pool": pool_x, "test": test_x, "start": start_x}
        y = {"pool": pool_y, "test": test_y, "start": start_y}
        for strategy in a.strategies:
            curves[strategy].append(curve(strategy, seed, size, x, y))
            last = curves[strategy][-1][-1]
            print(
                f"{dataset} seed {seed} {strategy}: {last['labels']} labels, acc {last['accuracy']:.3f}",
                file=sys.stderr,
            )  # noqa: T201
    full = LogisticRegression(class_weight="balanced").fit(pool_x, pool_y)  # every pool row labelled
    counts = {label: int((test_y == label).sum()) for label in data["labels"]}
    return {
        "dataset": dataset,
        "sizes": size,
        "seeds": a.seeds,
        "curves": curves,
        "majority": max(counts.values()) / len(test_y),
        "whole_pool": float((full.predict(test_x) == test_y).mean()),
        "embed_s": embed_s,
    }


def baseline(strategy: str) -> str:
    """The random strategy under the same head."""
    return "random" + (UNWEIGHTED if strategy.endswith(UNWEIGHTED) else "")


def gains(curves: dict[str, list[list[dict[str, Any]]]], strategy: str) -> list[float]:
    """Per seed: the strategy's mean accuracy difference to random over the rounds after the start."""
    return [
        statistics.fmean(c["accuracy"] - r["accuracy"] for c, r in zip(mine[1:], rand[1:], strict=True))
        for mine, rand in zip(curves[strategy], curves[baseline(strategy)], strict=True)
    ]


def worst_drop(runs: list[list[dict[str, Any]]]) -> float:
    """The largest fall of test accuracy from one round to the next, over every seed (0 if none)."""
    return min(0.0, *(b["accuracy"] - a["accuracy"] for run in runs for a, b in itertools.pairwise(run)))


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def at_round(runs: list[list[dict[str, Any]]], r: int) -> list[float]:
    return [run[r]["accuracy"] for run in runs]


def render(results: list[dict[str, Any]], prov: dict[str, Any], code_after: dict[str, Any]) -> str:
    """Markdown: sizes, then per dataset one row per strategy: mean ± sd test accuracy per label count."""
    lines = [
        "## Active learning: accuracy vs labels used (RT, BBC; frozen MiniLM + logistic regression)",
        "",
        *harness.provenance_lines(prov, code_after),
        f"- {harness.CONTENTION_NOTE}",
        "- learner: frozen `minilm-l6` mean-pooled normalised embedding + scikit-learn "
        '`LogisticRegression(class_weight="balanced")`, refitted from scratch each round; strategies from '
        "`tunelab.evaluation.active` (what `tunelab label suggest` runs); cells are test accuracy, "
        "mean ± sample sd over the seeds; gain = per-seed mean accuracy difference to random over the "
        "rounds after the start, mean ± sd over seeds, and in how many seeds it is > 0; worst drop = the "
        "largest fall of accuracy from one round to the next in any seed; `-unweighted`: the same "
        "strategy under `LogisticRegression()` without class weights, against random under that head",
        "",
    ]
    for result in results:
        size, curves, seeds = result["sizes"], result["curves"], result["seeds"]
        counts = [str(point["labels"]) for point in next(iter(curves.values()))[0]]
        shown = range(0, size["rounds"] + 1, 2)
        lines += [
            f"**{result['dataset']}**: pool {size['pool']}, test {size['test']} "
            f"(majority class {result['majority']:.3f}; whole pool labelled {result['whole_pool']:.3f}), "
            f"start {size['k']} per label, +{size['n']} per round, {size['rounds']} rounds (every second "
            f"shown), seeds {', '.join(map(str, seeds))}, texts cut to {size['max_length']} tokens, "
            f"embedding {result['embed_s']:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
            f"wall {result['wall_s'] / 60:.1f} min, other cores {result['foreign_cores']:.2f}",
            "",
            f"| strategy | {' | '.join(f'{counts[r]} labels' for r in shown)} "
            "| gain vs random | seeds ahead | worst drop |",
            "|---|" + "---:|" * (len(shown) + 3),
        ]
        for strategy, runs in curves.items():
            cells = " | ".join("{:.3f} ± {:.3f}".format(*spread(at_round(runs, r))) for r in shown)
            drop = f"{worst_drop(runs):+.3f}"
            if baseline(strategy) not in curves or strategy == baseline(strategy):
                lines.append(f"| {strategy} | {cells} | - | - | {drop} |")
                continue
            per_seed = gains(curves, strategy)
            mean, sd = spread(per_seed)
            ahead = f"{sum(g > 0 for g in per_seed)}/{len(per_seed)}"
            lines.append(f"| {strategy} | {cells} | {mean:+.3f} ± {sd:.3f} | {ahead} | {drop} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """One panel per dataset: mean test accuracy vs labels used per strategy, shaded min-max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.8), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        for strategy, runs in result["curves"].items():
            if strategy.endswith(UNWEIGHTED):
                continue  # the ablation is in the table; the plot shows what label suggest users get
            xs = [p["labels"] for p in runs[0]]
            per_round = [at_round(runs, r) for r in range(len(xs))]
            style = STYLES.get(strategy, {})
            means = [statistics.fmean(v) for v in per_round]
            (line,) = ax.plot(xs, means, ms=3, label=strategy, **style)
            low, high = [min(v) for v in per_round], [max(v) for v in per_round]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
        ax.set(
            title=f"{result['dataset']}: {len(result['seeds'])} seeds, pool {result['sizes']['pool']}, "
            f"majority class {result['majority']:.2f}",
            xlabel="labels used",
            ylabel="test accuracy (mean, band: min-max)",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="rt,bbc", help="comma-separated: rt, bbc")
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="comma-separated; gains need random"
    )
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=harness.OUT / "active_learning.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    a = parser.parse_args()
    a.strategies, a.seeds = a.strategies.split(","), [int(s) for s in a.seeds.split(",")]
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
