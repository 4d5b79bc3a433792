"""ChatterBot dialogues (shipped in ``chatterbot-corpus``) -> intent CSV (English, Chinese) and chat JSONL.

``tunelab.data`` is imported inside the converters (see ``rotten_tomatoes``), and so is ``yaml``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

MIN_INTENT_ROWS = 5  # a category needs rows in both splits and a few to learn from
MAX_CHAT_TURNS = 8  # longer chatterbot dialogues (up to 88 lines) are cut to their first turns


def _chatterbot_openers(language_dir: Path) -> dict[str, set[str]]:
    """User utterance opening each conversation (whitespace-collapsed) -> categories (file stems) it opens."""
    import yaml

    seen: dict[str, set[str]] = {}
    for path in sorted(language_dir.glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            text = " ".join(str(conversation[0]).split()) if conversation else ""
            if text:
                seen.setdefault(text, set()).add(path.stem)
    return seen


def prepare_chatterbot(pkg: Path, out: Path, language: str = "english") -> dict[str, int]:
    """Chatterbot conversation openers of ``language`` -> intent category (the YAML file), deduplicated.

    Skewed (English: trivia 261 openers, gossip 6; Chinese: psychology 74, food 5). An opener found in
    several categories (English 3 of 749: "Hello", "How are you doing?", "Who are you?"; Chinese 3 of
    368: "你好", "你好吗?", "你疯了") is too rare for a multi-label set and is dropped, as are categories
    with fewer than MIN_INTENT_ROWS openers (English health 1, humor 2; Chinese gossip 4); seeded 80/20
    stratified train/test split.
    """
    from tunelab.data.splits import holdout_split
    from tunelab.data.writers import write_csv, write_splits

    seen = _chatterbot_openers(pkg / "data" / language)
    counts = Counter(next(iter(labels)) for labels in seen.values() if len(labels) == 1)
    rows = [
        (text, label)
        for text, labels in seen.items()
        if len(labels) == 1 and counts[label := next(iter(labels))] >= MIN_INTENT_ROWS
    ]
    train, test = holdout_split(rows, stratify=[label for _, label in rows])
    return write_splits(out, {"train.csv": train, "test.csv": test}, write_csv)


def _chat_messages(conversation: list[object]) -> list[dict[str, str]]:
    """A chatterbot dialogue (alternating lines, user first) as messages ending on an assistant turn."""
    lines = [" ".join(str(line).split()) for line in conversation[:MAX_CHAT_TURNS]]
    lines = lines[: len(lines) - len(lines) % 2]
    return [{"role": ("user", "assistant")[i % 2], "content": line} for i, line in enumerate(lines)]


def prepare_chatterbot_qa(pkg: Path, out: Path) -> dict[str, int]:
    """Chatterbot English dialogues -> ``messages`` JSONL for instruction tuning, deduplicated.

    Every dialogue becomes user/assistant turns (an odd last line dropped; at most MAX_CHAT_TURNS
    lines). Exact duplicates are dropped. The seeded 90/10 train/dev split is by opening question,
    so one question never has answers in both splits (many questions have several answers).
    """
    import yaml

    from tunelab.data.writers import write_jsonl, write_splits

    seen: dict[str, list[dict[str, str]]] = {}
    for path in sorted((pkg / "data" / "english").glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            messages = _chat_messages(conversation)
            if messages and all(m["content"] for m in messages):
                seen.setdefault(json.dumps(messages), messages)
    openers = sorted({m[0]["content"] for m in seen.values()})
    dev_openers = set(random.Random(0).sample(openers, k=len(openers) // 10))
    split: dict[str, list[dict[str, object]]] = {"train.jsonl": [], "dev.jsonl": []}
    for messages in seen.values():
        split["dev.jsonl" if messages[0]["content"] in dev_openers else "train.jsonl"].append(
            {"messages": messages}
        )
    return write_splits(out, split, write_jsonl)
