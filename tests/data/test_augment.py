"""Augmentation: pure seeded EDA edits, deterministic per (seed, epoch) batches, exact on resume."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import toy_tasks
from tunelab.config import AugmentConfig
from tunelab.data.augment import (
    AugmentingCollator,
    augment_text,
    load_synonyms,
    random_delete,
    random_insert,
    random_swap,
    synonym_replace,
    text_units,
)
from tunelab.data.batching import epoch_batches
from tunelab.errors import CheckpointError, DataError
from tunelab.inference.back_translation import BackTranslator, back_translate_csv

WORDS = ["the", "plot", "was", "dull", "and", "far", "too", "long"]


def test_each_operation_does_what_it_says():
    rng = np.random.default_rng(0)
    swapped = random_swap(WORDS, 2, rng)
    assert Counter(swapped) == Counter(WORDS)
    assert swapped != WORDS
    deleted = random_delete(WORDS, 0.5, rng)
    assert 1 <= len(deleted) < len(WORDS)
    assert all(w in WORDS for w in deleted)
    inserted = random_insert(WORDS, 2, rng, {})
    assert len(inserted) == len(WORDS) + 2
    assert Counter(WORDS) <= Counter(inserted)
    replaced = synonym_replace(WORDS, 5, rng, {"dull": ["boring"], "long": ["lengthy"]})
    assert replaced == [{"dull": "boring", "long": "lengthy"}.get(w, w) for w in WORDS]


def test_char_unit_edits_chinese_characters():
    cfg = AugmentConfig(ops=["swap"], unit="char", alpha=0.2)
    text = "这部电影非常好看"
    out = augment_text(text, cfg, np.random.default_rng(1), {})
    assert sorted(out) == sorted(text)
    assert out != text


def test_zh_word_unit_edits_whole_segmented_chinese_words():
    text = "我们都喜欢北京天安门"
    assert text_units(text, "zh_word") == ["我们", "都", "喜欢", "北京", "天安门"]
    cfg = AugmentConfig(ops=["swap"], unit="zh_word", alpha=0.4)
    outs = {augment_text(text, cfg, np.random.default_rng(seed), {}) for seed in range(6)}
    assert len(outs - {text}) >= 4  # two swaps may undo each other; most seeds move words
    for out in outs:  # words move whole: every word is still there, and no word is split
        assert sorted(out) == sorted(text)
        assert all(word in out for word in text_units(text, "zh_word"))


def test_same_seed_same_edit_other_seed_other_edit():
    cfg = AugmentConfig(alpha=0.3)
    text = " ".join(WORDS)
    a = [augment_text(text, cfg, np.random.default_rng([7, i]), {}) for i in range(8)]
    b = [augment_text(text, cfg, np.random.default_rng([7, i]), {}) for i in range(8)]
    c = [augment_text(text, cfg, np.random.default_rng([8, i]), {}) for i in range(8)]
    assert a == b
    assert a != c


def _collator(cfg: AugmentConfig, seed: int = 3) -> tuple[AugmentingCollator, list[str]]:
    seen: list[str] = []

    def tokenize(columns):
        seen.extend(columns["text"])
        return {"input_ids": [[len(t)] for t in columns["text"]]}

    return AugmentingCollator(lambda rows: rows, tokenize, cfg, seed, {}), seen


def test_collator_is_deterministic_per_seed_and_epoch():
    rows = [
        {"row": i, "text": " ".join(WORDS[i % 4 :]), "labels": i % 2, "input_ids": [0]} for i in range(16)
    ]
    cfg = AugmentConfig(prob=1.0, alpha=0.3)

    def epoch_texts(epoch: int) -> list[str]:
        collator, seen = _collator(cfg)
        for batch in epoch_batches([1] * 16, 4, seed=3, epoch=epoch):
            out = collator([rows[i] for i in batch])
            assert [r["labels"] for r in out] == [rows[i]["labels"] for i in batch]
        return seen

    assert epoch_texts(0) == epoch_texts(0)
    assert epoch_texts(0) != epoch_texts(1)


def test_collator_passes_rows_without_text_through():
    collator, seen = _collator(AugmentConfig())
    rows = [{"input_ids": [1, 2], "labels": 0}]
    assert collator(rows) == rows
    assert seen == []


def test_synonym_file_is_read_and_checked(tmp_path):
    good = tmp_path / "syn.tsv"
    good.write_text("# comment\ndull\tboring, tedious\n", encoding="utf-8")
    assert load_synonyms(good) == {"dull": ["boring", "tedious"]}
    bad = tmp_path / "bad.tsv"
    bad.write_text("dull\tboring\nslow\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected word<TAB>synonym"):
        load_synonyms(bad)


def test_synonym_operation_needs_a_file():
    with pytest.raises(ValueError, match="needs synonyms_file"):
        AugmentConfig(ops=["synonym"])


@pytest.fixture(scope="module")
def tiny_t5_dir() -> Path:
    """The random T5 tunelab builds for the seq2seq toy task (a real encoder-decoder dir)."""
    return toy_tasks.tiny_t5_dir()


def test_back_translation_runs_both_models_deterministically(tiny_t5_dir):
    texts = ["the plot was dull", "a superb actor and a fine story"]
    bt = BackTranslator(tiny_t5_dir, tiny_t5_dir, max_new_tokens=5)
    out = bt(texts)
    assert len(out) == 2
    assert all(isinstance(t, str) and len(t.split()) <= 5 for t in out)
    assert bt(texts) == out
    one_way = BackTranslator(tiny_t5_dir, max_new_tokens=5)(texts)
    assert one_way == BackTranslator(tiny_t5_dir, max_new_tokens=5)(texts)


def test_back_translation_refuses_an_encoder_only_model(tiny_backbone_dir):
    with pytest.raises(CheckpointError, match="needs an encoder-decoder model"):
        BackTranslator(tiny_backbone_dir)


def test_back_translated_csv_keeps_rows_adds_labelled_paraphrases(tiny_t5_dir, tmp_path):
    from typer.testing import CliRunner

    from tunelab.cli import app

    src, dest = tmp_path / "train.csv", tmp_path / "augmented.csv"
    src.write_text("text,label\nthe plot was dull,neg\na superb actor,pos\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "data",
            "back-translate",
            str(src),
            str(dest),
            "--forward",
            str(tiny_t5_dir),
            "--max-new-tokens",
            "4",
            "--temperature",
            "1.0",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    with open(dest, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    translator = BackTranslator(tiny_t5_dir, max_new_tokens=4, temperature=1.0, seed=3)
    paraphrases = translator(["the plot was dull", "a superb actor"])
    expected = [(p.strip(), label) for p, label in zip(paraphrases, ["neg", "pos"], strict=True) if p.strip()]
    assert expected  # sampled, the random tiny T5 emits word pieces, so the added rows are really checked
    assert [(r["text"], r["label"]) for r in rows[:2]] == [
        ("the plot was dull", "neg"),
        ("a superb actor", "pos"),
    ]
    assert [(r["text"], r["label"]) for r in rows[2:]] == expected
    assert f"{len(expected)} back-translated rows added" in result.output


def test_back_translation_names_a_missing_column(tiny_t5_dir, tmp_path):
    src = tmp_path / "train.csv"
    src.write_text("sentence,label\nfine,pos\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.csv:1: no column 'text'"):
        back_translate_csv(src, tmp_path / "out.csv", lambda texts: list(texts), "text")
    assert not (tmp_path / "out.csv").exists()


def test_synonyms_and_back_translation_sources_report_bytes_that_are_not_utf8(tmp_path):
    synonyms = tmp_path / "syn.tsv"
    synonyms.write_bytes(b"dull\tboring\nsl\xf6w\ttardy\n")
    with pytest.raises(DataError, match=re.escape(f"{synonyms}:2: not UTF-8 (byte 0xf6")):
        load_synonyms(synonyms)
    src = tmp_path / "train.csv"
    src.write_bytes(b"text,label\nfine,pos\ncaf\xe9 bad,neg\n")
    with pytest.raises(DataError, match=re.escape(f"{src}:3: not UTF-8 (byte 0xe9")):
        back_translate_csv(src, tmp_path / "out.csv", lambda texts: list(texts), "text")
    assert not (tmp_path / "out.csv").exists()


def test_back_translated_csv_keeps_rows_and_adds_changed_paraphrases(tmp_path):
    src = tmp_path / "train.csv"
    src.write_text("text,label\na good film,pos\nsame,neg\n", encoding="utf-8")
    dest = tmp_path / "out.csv"
    added = back_translate_csv(src, dest, lambda texts: [t.replace("good", "fine") for t in texts], "text")
    assert added == 1
    assert dest.read_text(encoding="utf-8") == "text,label\na good film,pos\nsame,neg\na fine film,pos\n"
