"""Continuous batching: jobs decoded together, joining and leaving mid-run, reply exactly as alone."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    MistralConfig,
    MistralForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    TextIteratorStreamer,
)

from toy_tasks import tiny_llama_dir
from tunelab.inference.continuous import ContinuousDecoder, decode_all, supports
from tunelab.inference.generate import GenerationJob, generate
from tunelab.tasks.causal_lm import chat_prompt

TEXTS = [
    "the movie was good",
    "awful plot and a dull actor who never stops talking about himself",
    "hi",
    "a b c d e f g h i j k l m n o p",
]


@pytest.fixture(scope="module")
def lm():
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir(), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama_dir())


def jobs(tokenizer, **kwargs) -> list[GenerationJob]:
    """One chat job per text, each with its own length cap, so rows finish at different steps."""
    return [
        GenerationJob(
            prompt=chat_prompt(tokenizer, [{"role": "user", "content": text}]),
            add_special_tokens=False,
            max_new_tokens=10 + 3 * i,
            **kwargs,
        )
        for i, text in enumerate(TEXTS)
    ]


@pytest.mark.parametrize(
    "decoding",
    [
        {"temperature": 0},
        {"temperature": 1.0, "seed": 3},
        {"temperature": 0.8, "top_k": 5, "top_p": 0.9, "seed": 4},
    ],
    ids=["greedy", "seeded", "top-k-top-p"],
)
def test_replies_decoded_together_equal_each_decoded_alone(lm, decoding):
    """Two rows at a time: rows leave at different steps and waiting jobs join a batch mid-decode."""
    model, tokenizer = lm
    alone = [generate(model, tokenizer, job) for job in jobs(tokenizer, **decoding)]
    together = decode_all(model, tokenizer, jobs(tokenizer, **decoding), max_rows=2)
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.completion_tokens for g in together] == [g.completion_tokens for g in alone] == [10, 13, 16, 19]
    assert [g.prompt_tokens for g in together] == [g.prompt_tokens for g in alone]
    assert {g.finish_reason for g in together} == {"length"}
    assert len({g.text for g in together}) == len(TEXTS)  # the rows did not copy one another


def test_a_longer_prompt_joining_a_running_batch_pads_the_batch_not_the_reply(lm):
    model, tokenizer = lm
    short, long = jobs(tokenizer, temperature=0)[2], jobs(tokenizer, temperature=0)[1]
    decoder = ContinuousDecoder(model, tokenizer, max_rows=4)
    assert decoder.add(short) is None
    for _ in range(3):
        assert decoder.step() == []
    width = decoder.mask.shape[1]
    assert decoder.add(long) is None  # its prompt alone is longer than the running batch
    assert decoder.mask.shape[1] > width
    assert decoder.mask[0, : decoder.mask.shape[1] - width].sum() == 0  # the short row got left padding
    ended = {}
    while decoder.rows:
        ended.update((job.prompt, g) for job, g in decoder.step())
    assert ended[short.prompt].text == generate(model, tokenizer, jobs(tokenizer, temperature=0)[2]).text
    assert ended[long.prompt].text == generate(model, tokenizer, jobs(tokenizer, temperature=0)[1]).text


def test_stop_strings_end_a_row_like_generate(lm):
    model, tokenizer = lm
    full = generate(model, tokenizer, jobs(tokenizer, temperature=1.0, seed=2)[0]).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    [alone] = [generate(model, tokenizer, jobs(tokenizer, temperature=1.0, seed=2, stop=[stop])[0])]
    together = decode_all(model, tokenizer, jobs(tokenizer, temperature=1.0, seed=2, stop=[stop]), max_rows=4)
    assert together[0].text == alone.text == full[: full.index(stop)]
    assert together[0].finish_reason == alone.finish_reason == "stop"
    assert together[0].completion_tokens == alone.completion_tokens < 10


def test_a_cancelled_row_leaves_at_the_next_step_and_the_others_decode_on(lm):
    model, tokenizer = lm
    first, second = jobs(tokenizer, temperature=0)[1], jobs(tokenizer, temperature=0)[2]
    first.streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=5)
    decoder = ContinuousDecoder(model, tokenizer, max_rows=4)
    decoder.add(first)
    decoder.add(second)
    decoder.step()
    first.cancelled.set()
    assert decoder.step() == [(first, None)]
    assert [row.job for row in decoder.rows] == [second]
    assert decoder.mask.shape[1] == len(decoder.rows[0].ids[0]) - 1  # the long row's padding was trimmed
    assert decoder.cache is not None
    assert decoder.cache.get_seq_length() == decoder.mask.shape[1]  # keys trimmed with the mask
    list(first.streamer)  # ended: the reader is released, not left waiting for the timeout
    ended = []
    while decoder.rows:
        ended += decoder.step()
    assert ended[0][1].text == generate(model, tokenizer, jobs(tokenizer, temperature=0)[2]).text


def test_each_row_streams_its_own_reply(lm):
    model, tokenizer = lm
    batch = jobs(tokenizer, temperature=1.0, seed=9)
    for job in batch:
        job.streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=5)
    replies = decode_all(model, tokenizer, batch, max_rows=4)
    assert ["".join(job.streamer) for job in batch] == [g.text for g in replies]


def test_a_full_batch_refuses_another_job_and_leaves_the_rows_untouched(lm):
    model, tokenizer = lm
    decoder = ContinuousDecoder(model, tokenizer, max_rows=1)
    decoder.add(jobs(tokenizer, temperature=0)[0])
    with pytest.raises(ValueError, match="full"):
        decoder.add(jobs(tokenizer, temperature=0)[1])
    assert decoder.free == 0
    assert len(decoder.rows) == 1


def test_only_decoder_only_models_with_a_plain_dynamic_cache_are_batched(lm):
    assert supports(lm[0])
    sliding = MistralConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=8,
    )  # fmt: skip
    assert not supports(MistralForCausalLM(sliding))
    t5 = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    assert not supports(T5ForConditionalGeneration(t5))
