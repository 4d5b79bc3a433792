"""causal_lm with a ``template``: source/target pairs become one prompted user turn and the target reply."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from transformers import AutoTokenizer

from toy_tasks import tiny_llama_dir, write_jsonl
from tunelab.config import DataConfig
from tunelab.data import Columns
from tunelab.errors import DataError
from tunelab.tasks.causal_lm import Params, generation_prompt, load_data, preprocess, read_eval
from tunelab.tasks.spec import IGNORE_INDEX

TEMPLATE = "Headline for:\n\n{text}"
PAIRS = [
    {"source": "one two three four five six", "target": "Numbers rise"},
    {"source": "alpha beta gamma", "target": "Greek letters"},
]


def test_pairs_become_a_templated_user_turn_cut_to_source_words_and_the_target_reply(tmp_path: Path):
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    test = write_jsonl(tmp_path / "test.jsonl", PAIRS[:1])
    cfg = DataConfig(train_file=train, dev_file=train, test_file=test)
    data = load_data(cfg, Params(template=TEMPLATE, source_words=4), seed=0)
    assert data.test is not None
    assert data.test["messages"][0] == [
        {"role": "user", "content": "Headline for:\n\none two three four"},
        {"role": "assistant", "content": "Numbers rise"},
    ]
    assert data.train["messages"][1][0]["content"] == "Headline for:\n\nalpha beta gamma"  # shorter: whole
    scored = read_eval(test, Columns(text="text"), Params(template=TEMPLATE), [])
    assert scored["messages"][0][0]["content"] == "Headline for:\n\none two three four five six"


def test_prediction_asks_with_the_training_prompt_and_loss_is_on_the_target_only(tmp_path: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir())
    params = Params(template=TEMPLATE, source_words=4)
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    data = load_data(DataConfig(train_file=train, dev_file=train), params, seed=0)
    row = data.train[0]
    out = preprocess({"messages": [row["messages"]], "example_id": [0]}, tokenizer, params, {})
    ids, labels = out["input_ids"][0], out["labels"][0]
    prompt = generation_prompt({"text": PAIRS[0]["source"]}, tokenizer, params)
    # the rendered training row is the prediction prompt followed by the reply: asked as trained
    assert tokenizer.decode(ids).startswith(prompt)
    reply = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])
    assert reply == f"Numbers rise{tokenizer.eos_token}"


def test_template_needs_the_text_slot_and_pairs_need_both_columns(tmp_path: Path):
    with pytest.raises(ValidationError, match=r"\{text\}"):
        Params(template="Write a headline.")
    bad = write_jsonl(tmp_path / "bad.jsonl", [*PAIRS, {"source": "text without a title", "target": ""}])
    with pytest.raises(DataError, match=r"bad\.jsonl:3"):
        load_data(DataConfig(train_file=bad, dev_file=bad), Params(template=TEMPLATE), seed=0)
