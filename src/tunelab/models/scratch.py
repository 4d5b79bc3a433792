"""Models built by tunelab itself: a corpus-trained tokenizer with a random-init model, or a warm start.

The from-scratch start is a tokenizer trained on the corpus plus a random-init BERT, ModernBERT, Llama
or T5 (``init_vit``: an image processor normalising by the training images' statistics plus a
random-init ViT); the warm start is BERT2BERT. Each is saved as a plain HF directory that every task loads.

Tokenizers are trained with Hugging Face ``tokenizers`` and wrapped as a fast HF tokenizer, so every
task loads them with ``AutoTokenizer``. Two kinds:

- ``wordpiece``: BERT's normalizer and pre-tokenizer, WordPiece sub-words (English and other
  space-separated languages).
- ``char``: one token per character (NFKC, then BERT's normalizer with ``handle_chinese_chars``),
  a word-level vocabulary of the most frequent characters. Chinese has no spaces between words,
  and a character vocabulary makes char-level NER labels align one to one with tokens.

Both use the same five special tokens; ``[CLS] text [SEP]`` is added to every encoding (Llama uses
``[CLS]`` as BOS and ``[SEP]`` as EOS; T5 uses ``[SEP]`` as EOS and ``[PAD]`` as its decoder start),
so a pretrained dir fine-tunes on any tunelab task unchanged.

``init_encoder_decoder`` builds the other kind of seq2seq start: BERT2BERT (Rothe et al., 2020), an
encoder-decoder whose two halves both start from one pretrained encoder (e.g. the shipped MiniLM).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    EncoderDecoderModel,
    LlamaConfig,
    LlamaForCausalLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
    ViTConfig,
    ViTForMaskedImageModeling,
    ViTImageProcessorPil,
)

from tunelab.errors import TunelabError
from tunelab.io import atomic_dir
from tunelab.models.load import load_config, load_tokenizer

SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def _char_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token=SPECIALS["unk_token"]))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True
            ),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    tok.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS.values())
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _wordpiece_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token=SPECIALS["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS.values())
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def train_tokenizer(
    texts: Iterable[str], kind: str, vocab_size: int, min_frequency: int, max_length: int
) -> PreTrainedTokenizerFast:
    """A fast HF tokenizer trained on ``texts``; ``kind`` is ``wordpiece`` or ``char``.

    ``vocab_size`` is an upper bound: a char vocabulary keeps only characters seen ``min_frequency``
    times, rarer ones become ``[UNK]``.
    """
    build = _char_tokenizer if kind == "char" else _wordpiece_tokenizer
    tok = build(texts, vocab_size, min_frequency)
    cls, sep = SPECIALS["cls_token"], SPECIALS["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # __init__ unannotated in transformers
        tokenizer_object=tok, model_max_length=max_length, **SPECIALS
    )


def _t5(scratch: Any, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A T5 encoder-decoder with ``layers`` layers on each side (relative positions: no length limit)."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=scratch.hidden_size,
        d_kv=scratch.hidden_size // scratch.heads,
        d_ff=scratch.intermediate_size or 4 * scratch.hidden_size,
        num_layers=scratch.layers,
        num_decoder_layers=scratch.layers,
        num_heads=scratch.heads,
        feed_forward_proj="relu",
        dropout_rate=scratch.dropout,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        # Not a T5Config field: PreTrainedConfig keeps extra kwargs as attributes, which its
        # dataclass_transform signature does not show.
        decoder_start_token_id=tokenizer.pad_token_id,  # type: ignore[call-arg]  # see above
    )
    return T5ForConditionalGeneration(config)


def _modernbert(
    common: dict[str, Any], dropout: float, tokenizer: PreTrainedTokenizerFast
) -> PreTrainedModel:
    """A ModernBERT encoder (Warner et al., 2024): pre-norm, rotary positions, GeGLU, no biases.

    Why not BERT for pretraining from scratch on a CPU: post-norm BERT sits on the unigram plateau
    for thousands of steps, while pre-norm trains stably at a high learning rate. ``sparse_prediction``
    runs the MLM head only on the masked ~15% of tokens (the head is about half of a tiny model's
    compute). Every layer attends globally: sliding windows save nothing on blocks of a few hundred
    tokens.
    """
    config = ModernBertConfig(
        **common,
        # A legacy kwarg that ModernBertConfig.__post_init__ still turns into layer_types; its
        # dataclass_transform signature lists fields only.
        global_attn_every_n_layers=1,  # type: ignore[call-arg]  # see above
        sparse_prediction=True,
        embedding_dropout=dropout,
        attention_dropout=dropout,
        mlp_dropout=dropout,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    return ModernBertForMaskedLM(config)


def build_model(scratch: Any, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """The random-init model that ``scratch.architecture`` names, sized by ``scratch`` and ``tokenizer``.

    ``BertForMaskedLM`` (``architecture: bert``), ``ModernBertForMaskedLM`` (``modernbert``),
    ``LlamaForCausalLM`` (``llama``) or ``T5ForConditionalGeneration`` (``t5``).

    ``scratch`` is the task's ``from_scratch`` params: hidden_size, layers, heads, intermediate_size,
    max_position_embeddings, dropout. Vocabulary size and special ids come from ``tokenizer``.
    """
    if scratch.architecture == "t5":
        return _t5(scratch, tokenizer)
    ffn_factor = 2 if scratch.architecture == "modernbert" else 4  # GeGLU has 3 matrices, not 2
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": scratch.hidden_size,
        "num_hidden_layers": scratch.layers,
        "num_attention_heads": scratch.heads,
        "intermediate_size": scratch.intermediate_size or ffn_factor * scratch.hidden_size,
        "max_position_embeddings": scratch.max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if scratch.architecture == "modernbert":
        return _modernbert(common, scratch.dropout, tokenizer)
    if scratch.architecture == "bert":
        dropout = {"hidden_dropout_prob": scratch.dropout, "attention_probs_dropout_prob": scratch.dropout}
        return BertForMaskedLM(BertConfig(**common, **dropout))
    config = LlamaConfig(
        **common,
        num_key_value_heads=scratch.heads,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def corpus_texts(train: Any) -> list[str]:
    """The texts a scratch tokenizer learns from: every text column of the training split.

    ``text`` for every task, plus ``target`` for seq2seq (the decoder's vocabulary is learned too).
    """
    return [text for column in ("text", "target") if column in train.column_names for text in train[column]]


def init_from_scratch(scratch: Any, texts: list[str], dest: Path, seed: int) -> Path:
    """Train the tokenizer on ``texts``, build the random-init model, save both to ``dest`` atomically.

    An existing ``dest`` is reused (a resumed run must keep the vocabulary its checkpoint was trained
    with). The model init is seeded, so the same corpus and seed give the same starting weights.
    """
    if (dest / "config.json").is_file():
        return dest
    tokenizer = train_tokenizer(
        texts, scratch.tokenizer, scratch.vocab_size, scratch.min_frequency, scratch.max_position_embeddings
    )
    if scratch.architecture == "modernbert":  # it has no segment embeddings: never feed token_type_ids
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    torch.manual_seed(seed)
    model = build_model(scratch, tokenizer)
    with atomic_dir(dest) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
    return dest


def init_encoder_decoder(encoder_dir: Path, dest: Path, seed: int) -> Path:
    """BERT2BERT from ``encoder_dir``: encoder and decoder both start from its weights, saved to ``dest``.

    transformers' ``EncoderDecoderModel`` turns the decoder copy causal and adds cross-attention and an
    LM head (seeded init; the head's projection is tied to the word embeddings). What it leaves unset,
    and tunelab sets here, are the token ids: the decoder starts from pad (what seq2seq's collator
    shifts in) and stops at [SEP], as the encoder's tokenizer ends every target. The encoder's
    tokenizer is saved beside the model. An existing ``dest`` is reused (resume keeps its start).
    """
    if (dest / "config.json").is_file():
        return dest
    if load_config(encoder_dir).is_encoder_decoder:
        raise TunelabError(f"{encoder_dir} is already an encoder-decoder; train it without warm_start")
    tokenizer = load_tokenizer(encoder_dir)
    if tokenizer.pad_token_id is None or tokenizer.sep_token_id is None:
        raise TunelabError(f"{encoder_dir}: warm_start needs a BERT-style tokenizer with [PAD] and [SEP]")
    torch.manual_seed(seed)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(encoder_dir), str(encoder_dir))
    ids = {
        "decoder_start_token_id": tokenizer.pad_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    for key, value in ids.items():
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)
    with atomic_dir(dest) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
    return dest


def init_vit(scratch: Any, mean: list[float], std: list[float], dest: Path, seed: int) -> Path:
    """A random-init ViT with its masked-image-modelling decoder and an image processor, saved to ``dest``.

    ``scratch`` sizes it (image_size, patch_size, channels, hidden_size, layers, heads,
    intermediate_size, dropout); ``mean`` / ``std`` (one per channel, pixels in [0, 1]) normalise its
    inputs. The decoder upsamples by ``patch_size`` (``encoder_stride``), as SimMIM's one-layer
    prediction head does; a classification run loads the encoder and drops the decoder. The PIL
    backend of ViT's image processor needs no torchvision. An existing ``dest`` is reused (resume).
    """
    if (dest / "config.json").is_file():
        return dest
    side = {"height": scratch.image_size, "width": scratch.image_size}
    processor = ViTImageProcessorPil(size=side, image_mean=mean, image_std=std)
    config = ViTConfig(
        image_size=scratch.image_size,
        patch_size=scratch.patch_size,
        num_channels=scratch.channels,
        hidden_size=scratch.hidden_size,
        num_hidden_layers=scratch.layers,
        num_attention_heads=scratch.heads,
        intermediate_size=scratch.intermediate_size or 4 * scratch.hidden_size,
        hidden_dropout_prob=scratch.dropout,
        attention_probs_dropout_prob=scratch.dropout,
        encoder_stride=scratch.patch_size,
    )
    torch.manual_seed(seed)
    model = ViTForMaskedImageModeling(config)
    with atomic_dir(dest) as tmp:
        processor.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
    return dest
