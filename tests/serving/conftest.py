"""Serving fixtures: a tiny classifier artifact, a tiny Llama with a chat template, live loopback servers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from live_server import live_server
from tunelab.serving.predictor import Predictor, load_predictor

KEY = "test-key-0123456789"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (hidden 32) with a byte-level BPE tokenizer and a jinja chat template."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<pad>"]
    words = [
        "the",
        "movie",
        "plot",
        "actor",
        "was",
        "very",
        "good",
        "bad",
        "story",
        "scene",
        "quite",
        "a",
        "it",
        "user",
        "assistant",
        "system",
        "hello",
    ]
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@dataclass
class SlowPredictor(Predictor):
    """The real classifier predictor, made slow (or failing) to exercise queueing, timeouts and drain."""

    delay: float = 0.0
    fail: bool = False

    def predict(self, records: Any) -> list[dict[str, Any]]:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom " + " ".join(r["text"] for r in records))  # an error quoting the input
        return super().predict(records)


def slow(base: Predictor, delay: float = 0.0, fail: bool = False) -> SlowPredictor:
    return SlowPredictor(**vars(base), delay=delay, fail=fail)


@pytest.fixture(scope="session")
def classifier(classifier_dir: Path) -> Predictor:
    predictor = load_predictor(str(classifier_dir))
    assert predictor.schema is not None
    assert predictor.encoder is not None
    assert not predictor.generates
    return predictor


@pytest.fixture(scope="session")
def api_key() -> str:
    return KEY


@pytest.fixture(scope="session")
def live() -> Any:
    """``live(app)``: context manager running the app on a free loopback port, yielding its URL."""
    return live_server


@pytest.fixture(scope="session")
def make_slow(classifier: Predictor) -> Any:
    """``make_slow(delay=..., fail=...)``: the tiny classifier predictor, slowed down or failing."""
    return lambda delay=0.0, fail=False: slow(classifier, delay, fail)
