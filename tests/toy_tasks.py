"""Tiny learnable data per task, for tests that must cover every registered task (the method contract matrix).

Each entry maps a task name to a builder ``(tmp_dir) -> config sections`` (``data``, ``task``, maybe
``train.metric_for_best_model``) that work with the ``tiny_backbone_dir`` fixture. Adding a task to
``tunelab.tasks.TASKS`` means adding its entry here; ``test_every_task_has_toy_data`` fails until it
exists.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

Sections = dict[str, Any]

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "weak"]
FILLER = ["the", "movie", "plot", "actor", "was", "very", "and", "story", "scene", "quite", "a", "it"]


def toy_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Learnable rows: the label is whether a positive or a negative cue word appears."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        cue = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        words = rng.choices(FILLER, k=rng.randint(3, 14))
        words.insert(rng.randrange(len(words) + 1), cue)
        rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def classification(tmp: Path) -> Sections:
    """Cue-word sentiment rows in CSV."""
    return {
        "data": {
            "train_file": str(write_csv(tmp / "cls_train.csv", toy_rows(48, seed=2))),
            "dev_file": str(write_csv(tmp / "cls_dev.csv", toy_rows(16, seed=3))),
        },
        "task": {"name": "classification", "params": {"max_length": 32}},
    }


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
    return path


def lm_pretrain(tmp: Path) -> Sections:
    """A plain-text corpus of the toy sentences (one per line), masked LM on the tiny BERT."""
    return {
        "data": {
            "train_file": str(write_lines(tmp / "lm_train.txt", [t for t, _ in toy_rows(48, seed=2)])),
            "dev_file": str(write_lines(tmp / "lm_dev.txt", [t for t, _ in toy_rows(16, seed=3)])),
        },
        "task": {"name": "lm_pretrain", "params": {"max_length": 32}},
        "train": {"metric_for_best_model": "perplexity"},
    }


TOY_TASKS: dict[str, Callable[[Path], Sections]] = {
    "classification": classification,
    "lm_pretrain": lm_pretrain,
}
