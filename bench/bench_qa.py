"""Extractive QA on the shipped BBC questions: fine-tuned MiniLM beside the lexical-overlap baseline.

    flock -s /tmp/tunelab-cpu.lock python bench/bench_qa.py [overrides for tunelab train ...]
    python bench/bench_qa.py --run RUN_DIR      # score a run trained already (same data split)

Prepares ``bbc-squad`` (split by article), trains ``examples/qa_bbc.yaml`` with ``tunelab train`` in a
subprocess (wall time and peak RSS from ``os.wait4``), reads the best checkpoint's dev EM/F1 and the
last evaluation's (the last one involves no checkpoint choice on dev), and scores the sliding-window
lexical-overlap baseline on the same dev questions (its no-answer cut-off fitted on the train
questions). Writes the "QA" section of bench/RESULTS.md between its markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out" / "qa"
BEGIN, END = "<!-- qa:begin -->", "<!-- qa:end -->"
KEYS = ("exact_match", "f1", "HasAns_exact_match", "HasAns_f1", "NoAns_exact_match", "NoAns_f1")


def run_train(overrides: list[str]) -> tuple[float, float, Path]:
    """``tunelab train`` in a subprocess: (wall seconds, peak RSS MB, run dir)."""
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
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2"}
    start = time.perf_counter()
    with open(OUT / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed; see {OUT / 'train.log'}")
    return wall, usage.ru_maxrss / 1024, run


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from tunelab.assets import prepare_dataset
    from tunelab.data.squad import read_qa
    from tunelab.tasks.qa.baseline import baseline_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run dir to score instead of training one")
    args, overrides = parser.parse_known_args()
    OUT.mkdir(parents=True, exist_ok=True)
    counts = prepare_dataset("bbc-squad", OUT / "bbc-squad")
    if args.run is None:
        wall, rss, run = run_train(overrides)
        process = f"training process: {wall:.0f} s wall, peak RSS {rss:.0f} MB"
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
    given = f"--run runs/{run.name}" if args.run else " ".join(overrides)  # no machine paths in RESULTS.md
    command = f"flock -s /tmp/tunelab-cpu.lock python bench/bench_qa.py {given}"
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
    section = f"""{BEGIN}
## QA: extractive QA on bbc-squad (hand-written questions over BBC articles)

- command: `{command.strip()}` (date {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)
- data: `tunelab data prepare bbc-squad`: {split} (no article in both)
- model: {setup}; best checkpoint by dev F1
- {process}

| system (dev split) | EM | F1 | HasAns EM | HasAns F1 | NoAns EM | NoAns F1 |
|---|---|---|---|---|---|---|
{table}
{END}"""
    results = BENCH / "RESULTS.md"
    text = results.read_text(encoding="utf-8")
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text, encoding="utf-8")
    print(section)


if __name__ == "__main__":
    main()
