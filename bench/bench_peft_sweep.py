"""The sweep that chose LoRA's and IA3's defaults: targets x lr x r x epochs on an example, vs full FT.

Each run is ``tunelab train CONFIG --key value ...`` (the CLI exactly as a user runs it) into
``runs/peft-NAME``; the table reads each run's ``best/metrics.json`` (the dev-best checkpoint, with
its dev and test metrics). Runs already present are read, not retrained, so a sweep can be staged:

    python bench/bench_peft_sweep.py --runs rt-all-r8-lr2e-3-e1,rt-qv-r8-lr2e-3-e1 --threads 1
    python bench/bench_peft_sweep.py --table          # every finished run of RUNS, as markdown

``QV`` is peft's BERT default (query, value: tunelab's LoRA default before issue 17); ``ALL`` lists
every encoder linear by suffix (what ``target_modules: null`` now adapts; ``default`` in the table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import harness
from harness import ROOT

RT_LORA, RT_IA3, RT_FULL = (
    "examples/sentiment_lora.yaml",
    "examples/sentiment_ia3.yaml",
    "examples/sentiment.yaml",
)
BBC_LORA = "examples/topic_bbc_lora.yaml"
QV = "--methods[0].params.target_modules=[query,value]"
ALL = "--methods[0].params.target_modules=[query,key,value,output.dense,intermediate.dense]"


def _run(config: str, lr: str, *extra: str, epochs: int = 1, seed: int = 42) -> tuple[str, ...]:
    """A config with its rate, epochs and seed pinned (the examples' own values may move on)."""
    return (config, f"--train.lr={lr}", f"--train.num_train_epochs={epochs}", f"--train.seed={seed}", *extra)


# run name -> config and overrides, in the order the sweep ran (LoRA: r 8, alpha 16 unless named)
RUNS: dict[str, tuple[str, ...]] = {
    "rt-all-r8-lr1e-3-e1": _run(RT_LORA, "1e-3", ALL),
    "rt-all-r8-lr2e-3-e1": _run(RT_LORA, "2e-3", ALL),
    "rt-all-r8-lr1e-3-e3": _run(RT_LORA, "1e-3", epochs=3),  # stopped at step 60 of 375 for compute
    "rt-qv-r8-lr2e-3-e1": _run(RT_LORA, "2e-3", QV),
    "rt-ia3-lr1e-2-e1": _run(RT_IA3, "1e-2"),
    "rt-ia3-lr1e-2-e3": _run(RT_IA3, "1e-2", epochs=3),
    "rt-ia3-lr1e-2-e3-s43": _run(RT_IA3, "1e-2", epochs=3, seed=43),
    "rt-lora-default-lr2e-3-e1-s43": _run(RT_LORA, "2e-3", seed=43),
    "rt-full-lr1e-4-e1-s43": _run(RT_FULL, "1e-4", seed=43),
    "bbc-lora-default-lr2e-3-e1": _run(BBC_LORA, "2e-3"),
    # LoRA before issue 17 on tests/e2e/test_peft_parity.py's budget: does that test catch it?
    "rt1200-qv-r8-lr5e-4-e1": _run(
        RT_LORA, "5e-4", QV, "--data.max_train_samples=1200", "--data.max_eval_samples=400"
    ),
}


def metrics(run: Path) -> dict[str, float] | None:
    """Dev and test accuracy / macro-F1 of a finished run's dev-best checkpoint; None if unfinished."""
    path = run / "best" / "metrics.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    return {
        f"{split}_{key}": report[split][key] for split in ("dev", "test") for key in ("accuracy", "macro_f1")
    }


def settings(run: Path) -> dict[str, str]:
    """What the run trained with, from its saved config: method, targets, r, lr, epochs, seed."""
    import yaml

    from tunelab.methods.peft import LoraParams

    cfg = yaml.safe_load((run / "run_config.yaml").read_text(encoding="utf-8"))
    method = cfg["methods"][0]
    params = method.get("params") or {}
    targets = params.get("target_modules")
    return {
        "method": method["name"],
        "targets": "-" if method["name"] == "full" else "default" if targets is None else ",".join(targets),
        "r": str(params.get("r", LoraParams().r if method["name"] == "lora" else "-")),
        "lr": f"{cfg['train']['lr']:g}",
        "epochs": str(cfg["train"]["num_train_epochs"]),
        "seed": str(cfg["train"]["seed"]),
    }


SHOWN = ("dev_accuracy", "test_accuracy", "test_macro_f1")


def table(names: list[str]) -> str:
    """The finished runs as a markdown table (dev-best checkpoint: dev and test accuracy, test macro-F1)."""
    rows = [
        "| run | method | targets | r | lr | epochs | seed | dev acc | test acc | test macro-F1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        run = ROOT / "runs" / f"peft-{name}"
        found = metrics(run)
        if found is None:
            continue
        cells = [name, *settings(run).values(), *(f"{found[k]:.3f}" for k in SHOWN)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    """Train the chosen runs that have no result yet, then print the table of all finished runs."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default="", help="comma-separated names from RUNS to train (if unfinished)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--table", action="store_true", help="only print the table of finished runs")
    a = parser.parse_args()
    for name in filter(None, a.runs.split(",")):
        run = ROOT / "runs" / f"peft-{name}"
        if a.table or metrics(run) is not None:
            continue
        config, *overrides = RUNS[name]
        cmd = [
            sys.executable,
            "-m",
            "tunelab.cli",
            "train",
            config,
            f"--train.output_dir={run}",
            "--overwrite",
        ]
        harness.require_ok(
            harness.run(
                [*cmd, *overrides], ROOT / "runs" / f"peft-{name}.log", env=harness.child_env(a.threads)
            ),
            name,
        )
    print(table(list(RUNS)))  # noqa: T201


if __name__ == "__main__":
    main()
