"""The customer-service assistant's replies, English (with the SFT'd SmolLM2 generator) and Chinese.

    OMP_NUM_THREADS=1 python bench/bench_assistant.py [--generators RUN ...] [--max-new-tokens 64]

Runs ``tunelab apps assistant-eval`` on the held-out questions of each language and tabulates, per
path the assistant took (stored answer, generator, handoff), the reply quality against the reference
answers (chrF and exact match; ``tunelab.apps.replies``) beside the alternatives on the same
questions: the best stored answer whatever its score, the handoff message and the generator's reply.

- English: ``examples/apps/customer_service/assistant_app.yaml`` with ``generator_run`` set to each of
  ``--generators`` in turn (e.g. ``examples/sft_smollm2.yaml``'s run), on ``chatterbot`` /
  ``chatterbot-answers``;
- Chinese: ``examples/apps/customer_service/assistant_zh_app.yaml`` (no generator: tunelab ships no
  Chinese causal LM), on ``chatterbot-zh`` / ``chatterbot-answers-zh``.

The runs the settings name must exist (the README's commands train them). Results go between the
``bench:assistant`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

import harness
from harness import ROOT

OUT = harness.OUT / "assistant"
APP = ROOT / "examples" / "apps" / "customer_service"
DATA = ROOT / "data"
SETS = {
    "English": ("assistant_app.yaml", "chatterbot", "chatterbot-answers"),
    "Chinese": ("assistant_zh_app.yaml", "chatterbot-zh", "chatterbot-answers-zh"),
}
SOURCES = ("sent", "best_stored", "handoff", "generator")


def settings_file(name: str, generator: str | None) -> Path:
    """The shipped settings, with ``generator_run`` set when ``generator`` is given (a copy in OUT)."""
    shipped = APP / SETS[name][0]
    if generator is None:
        return shipped
    settings = yaml.safe_load(shipped.read_text(encoding="utf-8")) | {"generator_run": generator}
    path = OUT / f"{name.lower()}_{Path(generator).name}_app.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    return path


def evaluate(name: str, generator: str | None, max_new_tokens: int) -> dict[str, Any]:
    """``tunelab apps assistant-eval`` of one language: its JSON and the command's measures."""
    _, intents, answers = SETS[name]
    cmd = [sys.executable, "-m", "tunelab.cli", "apps", "assistant-eval", settings_file(name, generator)]
    cmd += ["--intent-data", DATA / intents / "test.csv", "--answers-data", DATA / answers / "test.csv"]
    cmd += ["--max-new-tokens", str(max_new_tokens)]
    label = f"{name}-{Path(generator).name}" if generator else name
    stdout = OUT / f"{label}.json"
    row = harness.require_ok(harness.run(cmd, OUT / f"{label}.log", stdout=stdout), f"assistant-eval {label}")
    return json.loads(stdout.read_text(encoding="utf-8")) | {"run": row, "generator": generator}


def _cell(figures: dict[str, Any] | None) -> str:
    if not figures or figures["chrf"] is None:
        return "-"
    return f"{figures['chrf']:.1f} / {figures['exact']:.3f}"


def markdown(result: dict[str, Any], prov: dict[str, Any], max_new_tokens: int) -> str:
    lines = [
        "## Customer-service assistant replies (stored answer, generator, handoff)",
        "",
        *harness.provenance_lines(prov),
        "",
        "Held-out questions of the answer-selection test split (every distinct question, its reference "
        "answers = all its answers in the split). English: `assistant_app.yaml` (`runs/intent-chatterbot`, "
        "`runs/answers-en`) with the `generator_run` named in the set column "
        f"(greedy, at most {max_new_tokens} new tokens); Chinese: `assistant_zh_app.yaml` (`runs/intent-zh`, "
        "`runs/answers-zh`, no generator). Each cell: mean chrF (sacrebleu, 0-100, best over the "
        "question's references) / share of replies that are exactly a reference. `sent` is the reply "
        "the assistant sends on that path; the other columns are what each source would have replied "
        "to the same questions.",
        "",
        "| set | path | questions | sent | best stored answer | handoff message | generator |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, out in result.items():
        for group in ("answer", "generator", "handoff", "all"):
            figures = out["replies"][group]
            if figures["questions"] == 0:
                continue
            cells = " | ".join(_cell(figures.get(source)) for source in SOURCES)
            lines.append(f"| {name} | {group} | {figures['questions']} | {cells} |")
    lines += [
        "",
        "| set | intent macro-F1 | answers recall@1 / MRR | eval wall time |",
        "|---|---|---|---|",
    ]
    for name, out in result.items():
        intent, answers = out["intent"], out["answers"]
        lines.append(
            f"| {name} | {intent['macro_f1']:.3f} | {answers['recall@1']:.3f} / {answers['mrr']:.3f} "
            f"| {out['run']['wall_s']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--generators", nargs="+", default=["runs/sft-smollm2"], help="English generator_run dirs"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Longest generated reply")
    args = parser.parse_args()
    os.chdir(ROOT)  # the settings' run paths are relative to the repository
    prov = harness.provenance()
    OUT.mkdir(parents=True, exist_ok=True)
    result = {f"English, {g}": evaluate("English", g, args.max_new_tokens) for g in args.generators}
    result["Chinese"] = evaluate("Chinese", None, args.max_new_tokens)
    (OUT / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    harness.write_section("assistant", markdown(result, prov, args.max_new_tokens))
    print(json.dumps({k: v["replies"] for k, v in result.items()}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
