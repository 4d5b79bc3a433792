"""causal_lm: chat-template rendering, response-only labels with EOS, data shapes, packing, GA parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from toy_tasks import causal_lm, tiny_llama_dir, toy_conversations, write_jsonl
from tunelab.data.conversations import load_conversation_file
from tunelab.errors import DataError
from tunelab.tasks.causal_lm import Params, chat_prompt, collator, preprocess, train_collator
from tunelab.tasks.spec import IGNORE_INDEX

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another one?"},
    {"role": "assistant", "content": "Green, or maybe red."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_llama_dir())


def features(tokenizer, conversations, **params):
    batch = {"messages": conversations, "example_id": list(range(len(conversations)))}
    return preprocess(batch, tokenizer, Params(**params), {})


def test_labels_cover_exactly_the_responses_and_their_eos(tokenizer):
    out = features(tokenizer, [CONVERSATION])
    ids, labels = out["input_ids"][0], out["labels"][0]
    labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert [labels[i] for i in labelled] == [ids[i] for i in labelled]
    # contiguous runs of labelled tokens are the responses, each closed by EOS
    runs, current = [], []
    for i in range(len(ids)):
        if labels[i] != IGNORE_INDEX:
            current.append(ids[i])
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    eos = tokenizer.eos_token
    assert [tokenizer.decode(run) for run in runs] == [f"Blue.{eos}", f"Green, or maybe red.{eos}"]
    assert all(run[-1] == tokenizer.eos_token_id for run in runs)
    # every prompt/template token (system, user, role headers, the newline after EOS) is ignored
    ignored = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label == IGNORE_INDEX])
    assert "Blue" not in ignored
    assert "Green" not in ignored
    assert "Name a colour." in ignored


def test_train_text_equals_the_served_prompt_plus_response(tokenizer):
    """Template round trip: what training renders == the server/predict prompt + response + EOS."""
    out = features(tokenizer, [CONVERSATION])
    train_text = tokenizer.decode(out["input_ids"][0])
    served = chat_prompt(tokenizer, CONVERSATION[:-1]) + CONVERSATION[-1]["content"] + tokenizer.eos_token
    assert train_text.startswith(served)
    assert train_text[len(served) :].strip() == ""


def test_pad_equal_to_eos_is_still_a_label(tokenizer):
    """SmolLM2's pad id is its EOS id: padding must be masked by length, never by id."""
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    out = features(tokenizer, [CONVERSATION[:3], CONVERSATION])
    rows = [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]
    batch = collator(tokenizer, Params())(rows)
    short = batch["labels"][0]
    n = len(out["input_ids"][0])
    assert (short[n:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][0, n:] == 0).all()
    assert (short[:n] == tokenizer.eos_token_id).sum() == 1  # the response's EOS keeps its label


def test_every_input_shape_reads_to_messages(tmp_path):
    data = load_conversation_file(write_jsonl(tmp_path / "x.jsonl", toy_conversations(8, seed=1)))
    assert len(data) == 8
    for messages in data["messages"]:
        assert messages[-1]["role"] == "assistant"
        assert messages[-2]["role"] == "user"


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [
        {"prompt": "hi", "completion": "hello"},
        {"question": "no known shape"},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_conversation_file(path)
    message = str(err.value)
    assert f"{path}:2: no conversation found" in message
    assert f"{path}:3: turn 0" in message
    assert f"{path}:4: no non-empty assistant response" in message
    assert f"{path}:1" not in message


def test_packed_batch_gives_each_sequence_its_unpacked_loss(tokenizer):
    """Packing with per-sequence position ids: the summed response loss equals the padded batch's."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir(), dtype=torch.float32).eval()
    out = features(tokenizer, [CONVERSATION, CONVERSATION[:3], CONVERSATION[1:3]])
    rows = [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]

    def summed_loss(batch):
        labels = batch["labels"]
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
        return torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="sum"
        )

    with torch.no_grad():
        padded = summed_loss(collator(tokenizer, Params())(rows))
        packed_batch = train_collator(tokenizer, Params(packing=True))(rows)
        assert packed_batch["input_ids"].shape[0] == 1
        packed = summed_loss(packed_batch)
        positions = torch.arange(packed_batch["input_ids"].shape[1])[None]
        crossed = summed_loss({**packed_batch, "position_ids": positions})
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    assert (crossed - padded).abs() > 1e-3  # attention across sequences would differ


def test_toy_sections_point_at_the_tiny_llama(tmp_path: Path):
    sections = causal_lm(tmp_path)
    assert Path(sections["model"]["name_or_path"]) == tiny_llama_dir()
    assert (tiny_llama_dir() / "chat_template.jinja").is_file()


def test_a_tokenizer_without_chat_template_is_refused_with_the_fix(tokenizer):
    from tunelab.errors import TunelabError

    bare = AutoTokenizer.from_pretrained(tiny_llama_dir())
    bare.chat_template = None
    with pytest.raises(TunelabError, match="no chat template"):
        features(bare, [CONVERSATION])
