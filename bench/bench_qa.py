"""Extractive QA on the shipped BBC questions: fine-tuned MiniLM beside the lexical-overlap baseline.

    flock -s /tmp/tunelab-cpu.lock python bench/bench_qa.py [overrides for tunelab train ...]
    python bench/bench_qa.py --run RUN_DIR      # score a run trained already (same data split)

Prepares ``bbc-squad`` (split by article), trains ``examples/qa_bbc.yaml`` with ``tunelab train`` in a
subprocess (``harness.run``: wall time and peak RSS from ``os.wait4``), reads the best checkpoint's
dev EM/F1 and the last evaluation's (the last one involves no checkpoint choice on dev), and scores the
sliding-window lexical-overlap baseline on the same dev questions (its no-answer cut-off fitted on the
train questions). Writes the "QA" section of bench/RESULTS.md between its ``bench:qa`` markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

import harness
from harness import ROOT

OUT = harness.OUT / "qa"
THREADS = 2
KEYS = ("exact_match", "f1", "HasAns_exact_match", "HasAns_f1", "NoAns_exact_match", "NoAns_f1")


def run_train(overrides: list[str]) -> tuple[dict, Path]:
    """``tunelab train`` in a subprocess: (``harness.run``'s measures, run dir)."""
    run = OUT / "run"
    data = OUT / "bbc-squad"
    cmd = [
        sys.executable,
        "-m",
        "tunelab.cli",
        "train",
        str(ROOT / "examples" / "qa_bbc.yaml"),
        f"--data.train_file={data / 'train.json'}",
        f"--data.dev_file={data / 'dev.json'}",
        f"--train.output_dir={run}",
        "--overwrite",
        *overrides,
    ]
    row = harness.run(cmd, OUT / "train.log", env=harness.child_env(THREADS))
    return harness.require_ok(row, "training"), run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run dir to score instead of training one")
    args, overrides = parser.parse_known_args()
    sys.path.insert(0, str(ROOT / "src"))
    from tunelab.assets import prepare_dataset
    from tunelab.data.squad import read_qa
    from tunelab.tasks.qa.baseline import baseline_report

    given = ["--run", f"runs/{args.run.name}"] if args.run else overrides  # no machine paths in RESULTS.md
    prov = harness.provenance(harness.command_line(given), threads=THREADS, with_files=True)
    OUT.mkdir(parents=True, exist_ok=True)
    counts = prepare_dataset("bbc-squad", OUT / "bbc-squad")
    if args.run is None:
        measured, run = run_train(overrides)
        process = (
            f"training process: {measured['wall_s']:.0f} s wall, {measured['child_cpu_s']:.0f} s CPU, "
            f"peak RSS {measured['peak_rss_mb']:.0f} MB; other processes used "
            f"{measured['foreign_cores']:.2f} cores meanwhile (above 0.1 the time is disturbed)"
        )
    else:
        run, process = args.run, f"run trained separately ({args.run.name}; its time and RSS: see the notes)"
    model = json.loads((run / "best" / "metrics.json").read_text())["dev"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in history if "eval/f1" in r][-1]
    last_eval = {k: last[f"eval/{k}"] for k in KEYS}
    train, dev = (read_qa(OUT / "bbc-squad" / name) for name in ("train.json", "dev.json"))
    base = baseline_report(train, dev)
    (OUT / "results.json").write_text(
        json.dumps({"model": model, "last_eval": last_eval, "baseline": base, "process": process})
    )
    rows = [
        ("MiniLM fine-tuned (tunelab train), best checkpoint by dev F1", model),
        (f"MiniLM fine-tuned, last evaluation (step {last['step']}, no choice on dev)", last_eval),
        (f"lexical-overlap baseline (min_overlap {base['min_overlap']})", base),
    ]
    table = "\n".join(f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in KEYS) + " |" for name, m in rows)
    split = f"{counts['train.json']} train / {counts['dev.json']} dev questions, split by article"
    train_cfg = yaml.safe_load((run / "run_config.yaml").read_text())["train"]
    keys = ("num_train_epochs", "lr", "batch_size", "eval_steps")
    settings = ", ".join(f"{k} {train_cfg[k]}" for k in keys)
    setup = f"examples/qa_bbc.yaml on minilm-l6 ({settings})"
    provenance = "\n".join(harness.provenance_lines(prov, harness.source_state(with_files=True)))
    section = f"""## QA: extractive QA on bbc-squad (hand-written questions over BBC articles)

{provenance}
- data: `tunelab data prepare bbc-squad`: {split} (no article in both)
- model: {setup}; best checkpoint by dev F1
- {process}

| system (dev split) | EM | F1 | HasAns EM | HasAns F1 | NoAns EM | NoAns F1 |
|---|---|---|---|---|---|---|
{table}"""
    harness.write_section("qa", section)
    print(section)


if __name__ == "__main__":
    main()
