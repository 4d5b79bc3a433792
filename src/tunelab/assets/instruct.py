"""tunelab-instruct: Alpaca-format instructions written for tunelab (``asset_data/tunelab_instruct``).

``tunelab.data`` is imported inside the converter (see ``rotten_tomatoes``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

INSTRUCT_DIR = Path(__file__).parents[1] / "asset_data" / "tunelab_instruct"


def prepare_tunelab_instruct(pkg: Path, out: Path) -> dict[str, int]:
    """The Alpaca-format instructions tunelab ships -> train/dev JSONL, a seeded 85/15 split per category."""
    from tunelab.data.writers import write_jsonl, write_splits

    rows = [
        json.loads(line)
        for line in (INSTRUCT_DIR / "instructions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    rng = random.Random(0)
    dev_ids: set[int] = set()
    for category in sorted({row["category"] for row in rows}):
        members = [i for i, row in enumerate(rows) if row["category"] == category]
        dev_ids.update(rng.sample(members, k=max(1, round(len(members) * 0.15))))
    fields = ("instruction", "input", "output")
    split = {
        "train.jsonl": [{k: row[k] for k in fields} for i, row in enumerate(rows) if i not in dev_ids],
        "dev.jsonl": [{k: row[k] for k in fields} for i, row in enumerate(rows) if i in dev_ids],
    }
    return write_splits(out, split, write_jsonl)
