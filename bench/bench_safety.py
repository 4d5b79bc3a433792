"""Safety gate on generated replies: the sentiment run as a brand-policy gate against a keyword list.

    OMP_NUM_THREADS=1 python bench/bench_safety.py [--replies 500]

tunelab ships no harmful-output data set, so this measures the gate under a stand-in policy: a
customer-service brand rule "never send a negative-toned reply", judged by the Rotten Tomatoes
sentiment run of ``examples/sentiment.yaml`` (label ``negative`` blocks; the settings of
``examples/apps/customer_service/brand_safety_gate.yaml``). The candidate replies are RT test
snippets (never trained on), half negative and half positive, drawn with seed 0; they stand in
for generated replies, so what is measured is the gate, not a generator.

- **gate**: ``serving.safety.load_gate`` + ``SafetyGate.judge``, the code the server runs in its
  model thread; block rate on negative texts (recall) and on positive ones (false blocks) at
  several thresholds, and the added latency per reply: one reply per call (a lone request) and 16
  per call (the server's batcher under concurrent requests), fp32 on one thread. One more threshold
  is matched to the keyword list's false-block rate on ``--replies`` other test snippets
  (calibration rows), so both filters are compared at the same cost in wrongly blocked replies.
- **keyword list**: block a reply containing any word of ``NEGATIVE_WORDS`` (whole words,
  case-insensitive): the cheap filter a gate must beat.

The run is reused when ``runs/sentiment/best/metrics.json`` exists (the README's command trains the
same run); delete it to retrain. Results go between the ``bench:safety`` markers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness
from harness import ROOT

OUT = harness.OUT / "safety"
EXAMPLE = ROOT / "examples" / "sentiment.yaml"
GATE = ROOT / "examples" / "apps" / "customer_service" / "brand_safety_gate.yaml"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8)
BATCH = 16
# The baseline's list: common negative review/complaint words, written for this bench (not tuned on
# the replayed texts).
NEGATIVE_WORDS = [
    "bad",
    "worst",
    "awful",
    "terrible",
    "boring",
    "dull",
    "mess",
    "stupid",
    "tedious",
    "lame",
    "poor",
    "waste",
    "unfunny",
    "pointless",
    "mediocre",
    "bland",
    "predictable",
    "disappointing",
    "disappointment",
    "horrible",
    "annoying",
    "dumb",
    "ugly",
    "tiresome",
    "clumsy",
    "pretentious",
    "forgettable",
    "fails",
    "failed",
    "flat",
    "hate",
]


def tunelab(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tunelab.cli", *map(str, args)]


def sentiment_run() -> tuple[Path, float | None]:
    """``runs/sentiment`` (trained now unless finished) and its training wall time when trained here."""
    data = ROOT / "data" / "rotten-tomatoes"
    if not (data / "test.csv").is_file():
        log = OUT / "prepare-rotten-tomatoes.log"
        harness.require_ok(harness.run(tunelab("data", "prepare", "rotten-tomatoes", data), log), "prepare")
    run = ROOT / "runs" / "sentiment"
    if (run / "best" / "metrics.json").is_file():
        return run, None
    cmd = tunelab("train", EXAMPLE, "--overwrite")
    row = harness.require_ok(harness.run(cmd, OUT / "train-sentiment.log", env=harness.child_env()), "train")
    return run, row["wall_s"]


def replies(n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Replayed and calibration rows: two disjoint sets of ``n`` RT test rows, half of each label, seeded."""
    with open(ROOT / "data" / "rotten-tomatoes" / "test.csv", encoding="utf-8", newline="") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    rng = random.Random(0)
    replay, calibration = [], []
    for label in ("negative", "positive"):
        picked = rng.sample([row for row in rows if row[1] == label], n)
        replay += picked[: n // 2]
        calibration += picked[n // 2 :]
    rng.shuffle(replay)
    return replay, calibration


def matched_threshold(scores: list[float], labels: list[str], false_blocks: float) -> float:
    """The lowest threshold (0.01 steps) whose false-block rate on ``scores`` is at most ``false_blocks``."""
    for th in (i / 100 for i in range(50, 100)):
        if rates([s >= th for s in scores], labels)["false_blocks"] <= false_blocks:
            return th
    return 1.0


def keyword_blocks(text: str, pattern: re.Pattern[str]) -> bool:
    return pattern.search(text) is not None


def rates(blocked: list[bool], labels: list[str]) -> dict[str, float]:
    """Block rate among negative texts (recall) and among positive ones (false blocks)."""
    neg = [b for b, y in zip(blocked, labels, strict=True) if y == "negative"]
    pos = [b for b, y in zip(blocked, labels, strict=True) if y == "positive"]
    return {"recall": sum(neg) / len(neg), "false_blocks": sum(pos) / len(pos)}


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * (len(ms) - 1))]}


def bench(n: int) -> dict[str, Any]:
    from tunelab.io import read_yaml
    from tunelab.serving.safety import load_gate
    from tunelab.serving.settings import SafetySettings

    run, train_s = sentiment_run()
    settings = SafetySettings.model_validate(read_yaml(GATE, "safety settings"))
    assert settings.run == Path("runs/sentiment"), "the example gates with runs/sentiment"
    gate = load_gate(settings)
    rows, calibration = replies(n)
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    gate.judge(texts[:BATCH], BATCH)  # warm-up (first-call allocations), not timed

    with harness.measure() as single_m:
        single, verdicts = [], []
        for text in texts:
            t0 = time.perf_counter()
            verdicts += gate.judge([text], 1)
            single.append(time.perf_counter() - t0)
    with harness.measure() as batched_m:
        batched, again = [], []
        for i in range(0, len(texts), BATCH):
            t0 = time.perf_counter()
            part = gate.judge(texts[i : i + BATCH], BATCH)
            batched += [(time.perf_counter() - t0) / len(part)] * len(part)
            again += part
    drift = max(abs(a.score - b.score) for a, b in zip(verdicts, again, strict=True))

    pattern = re.compile(r"\b(" + "|".join(map(re.escape, NEGATIVE_WORDS)) + r")\b", re.IGNORECASE)
    keyword, keyword_s = [], []
    for text in texts:
        t0 = time.perf_counter()
        keyword.append(keyword_blocks(text, pattern))
        keyword_s.append(time.perf_counter() - t0)

    # The gate's threshold at the keyword list's false-block rate, chosen on the calibration rows
    # (disjoint from the replayed ones), then measured on the replayed rows.
    cal_texts, cal_labels = [t for t, _ in calibration], [y for _, y in calibration]
    cal_keyword = rates([keyword_blocks(t, pattern) for t in cal_texts], cal_labels)["false_blocks"]
    cal_scores = [v.score for v in gate.judge(cal_texts, BATCH)]
    matched = matched_threshold(cal_scores, cal_labels, cal_keyword)

    windows = [len(gate.windows(text)) for text in texts]
    return {
        "replies": {"total": len(texts), "negative": labels.count("negative"), "calibration": len(cal_texts)},
        "run": {"path": harness.rel(run), "train_s": train_s, "test": read_test(run)},
        "gate": {str(th): rates([v.score >= th for v in verdicts], labels) for th in THRESHOLDS},
        "gate_matched": {"threshold": matched, "calibration_keyword_false_blocks": cal_keyword}
        | rates([v.score >= matched for v in verdicts], labels),
        "gate_latency": {
            "one_per_call": percentiles(single) | {"foreign_cores": round(single_m["foreign_cores"], 2)},
            "batched": percentiles(batched) | {"foreign_cores": round(batched_m["foreign_cores"], 2)},
        },
        "keyword": rates(keyword, labels) | percentiles(keyword_s),
        "keyword_words": len(NEGATIVE_WORDS),
        "max_windows": max(windows),
        "batched_vs_single_max_score_diff": drift,
    }


def read_test(run: Path) -> dict[str, float]:
    test = json.loads((run / "best" / "metrics.json").read_text())["test"]
    return {k: round(test[k], 3) for k in ("accuracy", "macro_f1", "majority_baseline_accuracy")}


def markdown(result: dict[str, Any], prov: dict[str, Any]) -> str:
    r, kw, lat = result["replies"], result["keyword"], result["gate_latency"]
    one, many = lat["one_per_call"], lat["batched"]
    lines = [
        "## Safety gate on generated replies (stand-in policy: no negative-toned reply)",
        "",
        *harness.provenance_lines(prov),
        "",
        f"Replayed replies: {r['total']} Rotten Tomatoes test snippets ({r['negative']} negative, the rest "
        "positive; seed 0) standing in for generated replies; tunelab ships no harmful-output data, so "
        "the sentiment run (`examples/sentiment.yaml`, MiniLM, 4,000 training rows; test accuracy "
        f"{result['run']['test']['accuracy']:.3f}) stands in for a harm classifier and `negative` "
        "blocks (`examples/apps/customer_service/brand_safety_gate.yaml`). recall = share of negative "
        "replies blocked; false blocks = share of positive replies blocked. Latency: the gate's "
        "`judge()` (what the server runs in its model thread), fp32, 1 torch thread; at most "
        f"{result['max_windows']} window(s) per reply. Keyword list: {result['keyword_words']} negative "
        "words (bench/bench_safety.py `NEGATIVE_WORDS`), whole-word match. The matched threshold is "
        f"chosen on {r['calibration']} other test snippets (same label mix), never on the replayed ones.",
        "",
        "| filter | recall (negative blocked) | false blocks (positive blocked) "
        "| added p50 / p95 per reply |",
        "|---|---|---|---|",
    ]
    for th, rt in result["gate"].items():
        latency = (
            f"{one['p50_ms']:.1f} / {one['p95_ms']:.1f} ms (1 per call); {many['p50_ms']:.1f} ms "
            f"({BATCH} per call)"
            if th == "0.5"
            else "same"
        )
        lines.append(f"| gate, threshold {th} | {rt['recall']:.3f} | {rt['false_blocks']:.3f} | {latency} |")
    m = result["gate_matched"]
    lines.append(
        f"| gate, threshold {m['threshold']:.2f} (the keyword list's false-block rate on the "
        f"calibration rows) | {m['recall']:.3f} | {m['false_blocks']:.3f} | same |"
    )
    lines.append(
        f"| keyword list | {kw['recall']:.3f} | {kw['false_blocks']:.3f} "
        f"| {kw['p50_ms'] * 1000:.0f} / {kw['p95_ms'] * 1000:.0f} µs |"
    )
    lines += [
        "",
        f"other cores busy meanwhile: {one['foreign_cores']} (1 per call), {many['foreign_cores']} "
        f"({BATCH} per call); {harness.CONTENTION_NOTE}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=500, help="replies replayed, half of each label")
    args = parser.parse_args()
    os.chdir(ROOT)  # the example's run path is relative to the repository (and must stay inside it)
    OUT.mkdir(parents=True, exist_ok=True)
    prov = harness.provenance()
    result = bench(args.replies)
    (OUT / "results.json").write_text(json.dumps(result, indent=2))
    harness.write_section("safety", markdown(result, prov))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
