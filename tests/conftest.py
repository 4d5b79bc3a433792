"""Shared fixtures: a tiny random BERT saved as a real HF directory, learnable toy data, config builder."""

from __future__ import annotations

from tunelab.assets import hub_offline

# Before transformers is imported below: huggingface_hub reads the offline variables once, at import.
hub_offline()

# ruff: noqa: E402
import os

# precision: auto means bf16 on CPUs with native bf16 and fp32 elsewhere; the suite asserts exact
# losses and resumes, so every machine runs it in fp32 (subprocesses inherit this). The bf16 branch
# is tested by setting the variable (tests/training/test_precision.py).
os.environ["TUNELAB_CPU_BF16"] = "0"

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertForSequenceClassification, BertTokenizerFast

from toy_tasks import save_tiny_bert, toy_rows, write_csv
from tunelab.config import RunConfig, validate_config
from tunelab.models.artifact import save_model
from tunelab.models.run_info import RunInfo


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer BERT (hidden 32) with a WordPiece tokenizer trained here, saved HF-style."""
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    corpus = [text for text, _ in toy_rows(400, seed=1)]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=64)
    fast.save_pretrained(out)
    return save_tiny_bert(out, tok.get_vocab_size())


@pytest.fixture(scope="session")
def tiny_backbone_no_dropout_dir(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with dropout off: runs that must match exactly (other batching, other ranks)."""
    out = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    shutil.copytree(tiny_backbone_dir, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture
def toy_data(tmp_path: Path) -> dict[str, Path]:
    """Train/dev/test CSV files of learnable toy sentiment rows."""
    return {
        "train": write_csv(tmp_path / "train.csv", toy_rows(96, seed=2)),
        "dev": write_csv(tmp_path / "dev.csv", toy_rows(32, seed=3)),
        "test": write_csv(tmp_path / "test.csv", toy_rows(32, seed=4)),
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.fixture
def make_config(
    tiny_backbone_dir: Path, toy_data: dict[str, Path], tmp_path: Path
) -> Callable[..., RunConfig]:
    """Build a validated RunConfig for the tiny model and toy data; nested dict overrides merge in."""

    def build(**sections: dict[str, Any]) -> RunConfig:
        raw = {
            "model": {"name_or_path": str(tiny_backbone_dir)},
            "data": {"train_file": str(toy_data["train"]), "dev_file": str(toy_data["dev"])},
            "task": {"name": "classification", "params": {"max_length": 32}},
            "train": {
                "output_dir": str(tmp_path / "run"),
                "num_train_epochs": 4,
                "batch_size": 8,
                "lr": 3e-3,
                "warmup_steps": 2,
                "logging_steps": 1,
                "save_steps": 1000,
                "seed": 7,
            },
        }
        return validate_config(_merge(raw, sections))

    return build


@pytest.fixture(scope="session")
def classifier_dir(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tunelab classification artifact (random head) on the tiny BERT."""
    out = tmp_path_factory.mktemp("tiny-clf") / "model"
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        tiny_backbone_dir, num_labels=2, id2label={0: "negative", 1: "positive"}
    )
    info = RunInfo(task="classification", task_params={"max_length": 32}, labels=["negative", "positive"])
    save_model(model, BertTokenizerFast.from_pretrained(tiny_backbone_dir), out, info)
    return out


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    random.seed(0)
