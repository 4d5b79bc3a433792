"""Tiny learnable data per task, for tests that must cover every registered task (the method contract matrix).

Each entry maps a task name to a builder ``(tmp_dir) -> config sections`` (``data`` and ``task``) that
work with the ``tiny_backbone_dir`` fixture. Adding a task to ``tunelab.tasks.TASKS`` means adding its
entry here; ``test_every_task_has_toy_data`` fails until it exists.
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


TOY_TASKS: dict[str, Callable[[Path], Sections]] = {
    "classification": classification,
}


# Methods list per registered method for the contract matrix: small sizes for the tiny backbone. A method
# whose default params validate joins the matrix without an entry here.
TOY_METHODS: dict[str, list[dict[str, Any]]] = {
    "freeze": [{"name": "freeze", "params": {"trainable_layers": 1, "layer_lr_decay": 0.8}}],
    "moe": [{"name": "moe", "params": {"n_routed_experts": 4, "granularity": 2}}],
    "lora": [{"name": "lora", "params": {"r": 4, "use_rslora": True}}],
    "adalora": [{"name": "adalora", "params": {"init_r": 4, "target_r": 2, "tinit_ratio": 0.0}}],
    "prefix_tuning": [{"name": "prefix_tuning", "params": {"num_virtual_tokens": 4}}],
    "prompt_tuning": [{"name": "prompt_tuning", "params": {"num_virtual_tokens": 4}}],
}


def toy_methods(name: str) -> list[dict[str, Any]]:
    """The methods list the contract matrix trains for method ``name``."""
    return TOY_METHODS.get(name, [{"name": name}])
