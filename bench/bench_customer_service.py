"""Customer-service intent, English and Chinese: tunelab against the majority class and TF-IDF + LR.

    OMP_NUM_THREADS=1 python bench/bench_customer_service.py [--zh-backbone runs/zh-pretrain/best]

The two intent recipes of ``examples/apps/customer_service/README.md``, each on its prepared test.csv:

- English: ``examples/intent_chatterbot.yaml`` (MiniLM) on ``chatterbot`` (19 categories);
- Chinese: ``examples/apps/customer_service/intent_zh.yaml`` on ``chatterbot-zh`` (16 categories),
  fine-tuning ``--zh-backbone`` (the char-level ModernBERT of ``examples/pretrain_zh.yaml``; trained
  first when it is missing, ~27 min on 2 quiet threads, ~100 min on one busy core).

A run whose ``best/metrics.json`` exists (its example's ``train.output_dir``) is reused, so the
README's commands and this bench share runs; delete it to retrain. The references, on the same rows
(tunelab's reader: dev split off train): the majority class (tunelab's own
``majority_baseline_macro_f1``) and ``bench_skew.tfidf_baseline`` (uni+bigrams of words for English,
of characters for Chinese; C on dev macro-F1; class weights none and balanced). Results go between
the ``bench:customer-service`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import harness
from bench_skew import split_rows, tfidf_baseline
from harness import ROOT

OUT = harness.OUT / "customer_service"
APP = ROOT / "examples" / "apps" / "customer_service"
SETS: dict[str, dict[str, Any]] = {
    "English": {
        "asset": "chatterbot",
        "example": ROOT / "examples" / "intent_chatterbot.yaml",
        "analyzer": "word",
    },
    "Chinese": {"asset": "chatterbot-zh", "example": APP / "intent_zh.yaml", "analyzer": "char"},
}


def tunelab(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tunelab.cli", *map(str, args)]


def output_dir(example: Path) -> Path:
    from tunelab.config import load_config

    return ROOT / load_config(example).train.output_dir


def trained(example: Path, overrides: list[str], name: str) -> dict[str, Any]:
    """The run of ``example`` (trained now unless finished); its test metrics and wall time."""
    run_dir = output_dir(example)
    report = run_dir / "best" / "metrics.json"
    seconds = None
    if not report.is_file():
        cmd = tunelab("train", example, "--overwrite", *overrides)
        row = harness.require_ok(harness.run(cmd, OUT / f"train-{name}.log", env=harness.child_env()), name)
        seconds = row["wall_s"]
    return {"test": json.loads(report.read_text())["test"], "train_s": seconds, "run": str(run_dir)}


def bench(zh_backbone: Path) -> dict[str, Any]:
    if not (zh_backbone / "config.json").is_file():
        pretrain = ROOT / "examples" / "pretrain_zh.yaml"
        corpus = ROOT / "data" / "zh-corpus"
        if not (corpus / "train.txt").is_file():
            harness.require_ok(
                harness.run(tunelab("data", "prepare", "zh-corpus", corpus), OUT / "prepare-zh-corpus.log"),
                "zh-corpus",
            )
        harness.require_ok(
            harness.run(tunelab("train", pretrain), OUT / "pretrain-zh.log", env=harness.child_env()),
            "pretrain",
        )
        zh_backbone = output_dir(pretrain) / "best"
    result: dict[str, Any] = {}
    for name, spec in SETS.items():
        data = ROOT / "data" / spec["asset"]
        if not (data / "train.csv").is_file():
            log = OUT / f"prepare-{spec['asset']}.log"
            harness.require_ok(harness.run(tunelab("data", "prepare", spec["asset"], data), log), name)
        overrides = ["--model.name_or_path", str(zh_backbone)] if name == "Chinese" else []
        rows = split_rows(spec["example"], overrides)
        result[name] = {
            "rows": {split: len(texts) for split, (texts, _) in rows.items()},
            "labels": len(set(rows["train"][1])),
            "tfidf": tfidf_baseline(rows, spec["analyzer"]),
            "tunelab": trained(spec["example"], overrides, name),
        }
    return result


def markdown(result: dict[str, Any], prov: dict[str, Any]) -> str:
    lines = [
        "## Customer-service intent, English and Chinese (chatterbot categories)",
        "",
        *harness.provenance_lines(prov),
        "",
        "Test = the prepared test.csv of each set. tunelab: English `examples/intent_chatterbot.yaml` "
        "(MiniLM), Chinese `examples/apps/customer_service/intent_zh.yaml` (the char-level ModernBERT "
        "of `examples/pretrain_zh.yaml`, 6,000 steps), as shipped, one seed (42). TF-IDF + LR: word "
        "(English) or character (Chinese) uni+bigrams, C on dev macro-F1, class weights none / balanced.",
        "",
        "| set | rows train / dev / test | labels | majority class | TF-IDF + LR (none) "
        "| TF-IDF + LR (balanced) | tunelab | tunelab accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result.items():
        test, tfidf, rows = entry["tunelab"]["test"], entry["tfidf"], entry["rows"]
        f1s = [test["majority_baseline_macro_f1"], tfidf["none"]["macro_f1"], tfidf["balanced"]["macro_f1"]]
        f1s.append(test["macro_f1"])
        cells = [f"**{f:.3f}**" if f == max(f1s) else f"{f:.3f}" for f in f1s]
        lines.append(
            f"| {name} | {rows['train']} / {rows['dev']} / {rows['test']} | {entry['labels']} "
            f"| {' | '.join(cells)} | {test['accuracy']:.3f} |"
        )
    lines += ["", "Figures are test macro-F1 unless named otherwise; the best of each row in bold."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--zh-backbone", type=Path, default=ROOT / "runs" / "zh-pretrain" / "best", help="ZH model dir"
    )
    args = parser.parse_args()
    os.chdir(ROOT)  # the examples' data and run paths are relative to the repository
    prov = harness.provenance()
    OUT.mkdir(parents=True, exist_ok=True)
    result = bench(args.zh_backbone.resolve())
    (OUT / "results.json").write_text(json.dumps(result, indent=2))
    harness.write_section("customer-service", markdown(result, prov))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
