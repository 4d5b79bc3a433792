"""From-scratch init: trained tokenizers round-trip text, the saved dir loads as HF and fine-tunes."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from tunelab.models.scratch import init_from_scratch, train_tokenizer
from tunelab.tasks.lm_pretrain import ScratchParams

ZH = ["中共中央总书记江泽民发表新年讲话。", "这本书的质量还不错，内容很好。", "北京是中国的首都"] * 3


def test_char_tokenizer_round_trips_chinese_char_by_char(tmp_path: Path):
    tok = train_tokenizer(ZH, "char", vocab_size=500, min_frequency=1, max_length=64)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "江泽民是北京的书记"
    enc = loaded(text, return_offsets_mapping=True)
    assert loaded.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", *text, "[SEP]"]
    assert [text[a:b] for a, b in enc["offset_mapping"][1:-1]] == list(text)
    assert loaded.decode(enc["input_ids"], skip_special_tokens=True) == text
    assert loaded.convert_ids_to_tokens(loaded("龘")["input_ids"])[1] == "[UNK]"  # unseen character


def test_wordpiece_tokenizer_splits_unseen_words_into_pieces():
    tok = train_tokenizer(["the players play", "a player plays"] * 20, "wordpiece", 60, 1, 32)
    pieces = tok.convert_ids_to_tokens(tok("pear")["input_ids"])
    assert pieces[0] == "[CLS]"
    assert pieces[-1] == "[SEP]"
    assert "".join(p.removeprefix("##") for p in pieces[1:-1]) == "pear"


def test_init_from_scratch_writes_a_loadable_hf_dir(tmp_path: Path):
    scratch = ScratchParams(tokenizer="char", vocab_size=500, min_frequency=1, hidden_size=32, layers=2,
                            heads=2, max_position_embeddings=64)  # fmt: skip
    dest = init_from_scratch(scratch, ZH, tmp_path / "init", seed=0)
    mlm = AutoModelForMaskedLM.from_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    assert mlm.config.vocab_size == len(tok)
    assert mlm.config.num_hidden_layers == 2
    cls = AutoModelForSequenceClassification.from_pretrained(dest, num_labels=2)
    batch = tok(["北京很好"], return_tensors="pt")
    with torch.no_grad():
        assert cls(**batch).logits.shape == (1, 2)
    assert not list(tmp_path.glob(".init*"))  # no temp dir left behind
    again = init_from_scratch(scratch, ["other text"], dest, seed=1)  # resume reuses the vocabulary
    assert AutoTokenizer.from_pretrained(again).get_vocab() == tok.get_vocab()


def test_init_from_scratch_builds_llama_for_clm(tmp_path: Path):
    scratch = ScratchParams(architecture="llama", vocab_size=200, min_frequency=1, hidden_size=32, layers=1,
                            heads=2, max_position_embeddings=64)  # fmt: skip
    dest = init_from_scratch(scratch, ["the cat sat on the mat"] * 10, tmp_path / "init", seed=0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    assert model.config.model_type == "llama"
    assert model.config.bos_token_id == tok.cls_token_id


def test_modernbert_scratch_dir_fine_tunes_without_segment_ids(tmp_path: Path):
    sizes = {"hidden_size": 32, "layers": 2, "heads": 2, "max_position_embeddings": 64, "dropout": 0.0}
    scratch = ScratchParams(architecture="modernbert", tokenizer="char", vocab_size=500, **sizes)
    dest = init_from_scratch(scratch, ZH, tmp_path / "init", seed=0)
    tok = AutoTokenizer.from_pretrained(dest)
    batch = tok(["北京很好", "书"], return_tensors="pt", padding=True)
    assert "token_type_ids" not in batch  # ModernBERT has no segment embeddings
    mlm = AutoModelForMaskedLM.from_pretrained(dest)
    assert mlm.config.model_type == "modernbert"
    assert mlm.config.intermediate_size == 64  # GeGLU default: 2 * hidden_size
    assert mlm.config.mlp_dropout == 0.0
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 2] = labels[1, 1] = 7
    with torch.no_grad():
        assert mlm(**batch).logits.shape == (2, batch["input_ids"].shape[1], len(tok))
        assert mlm(**batch, labels=labels).logits.shape == (2, len(tok))  # sparse: masked tokens only
        tagger = AutoModelForTokenClassification.from_pretrained(dest, num_labels=7)
        assert tagger(**batch).logits.shape == (2, batch["input_ids"].shape[1], 7)
        classifier = AutoModelForSequenceClassification.from_pretrained(dest, num_labels=2)
        assert classifier(**batch).logits.shape == (2, 2)
