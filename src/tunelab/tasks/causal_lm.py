"""Instruction tuning (SFT) of a causal LM on conversations, with the model's own chat template.

The tokenizer's chat template is the one template object: training renders every conversation with
it, and prediction, the server's ``/v1/chat/completions`` and evaluation render prompts with
:func:`chat_prompt` (the same template, ``add_generation_prompt=True``), so the text a model is trained
on and the text it is asked with are byte-identical up to the response.

Loss is on assistant responses only: each assistant turn is located as the characters between the
template's generation prompt and the end-of-sequence token that closes the turn, and only tokens
overlapping those characters keep their id as label (the EOS included, so the model learns to stop);
everything else is ``-100``. Labels are never derived from the pad id (SmolLM2's pad token *is* its
EOS). Sequence packing (``packing: true``) concatenates a micro-batch into one row with per-sequence
``position_ids`` (transformers' ``DataCollatorWithFlattening``); transformers then builds a
block-diagonal mask from them, so packed sequences do not attend to each other.

With ``template`` set, rows are source/target pairs read as ``seq2seq`` reads them (e.g. ``tunelab
data prepare bbc-headlines``): the user message is the template around the source's first
``source_words`` words, the reply is the target. Prediction wraps each input text the same way, so a
decoder-only model becomes a summariser / headline writer that is trained and asked with one prompt.

Held-out metrics are the response-token loss and its perplexity, exact over the split (the pieces of
``lm_pretrain``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, DataCollatorWithFlattening

from tunelab.config import DataConfig
from tunelab.data import Columns, TaskData
from tunelab.data.conversations import load_conversation_data, load_conversation_file
from tunelab.errors import ConfigError, TunelabError
from tunelab.models.architectures import is_causal
from tunelab.tasks import seq2seq
from tunelab.tasks.lm_pretrain import loss_terms as token_loss_terms
from tunelab.tasks.lm_pretrain import metrics, row_token_loss
from tunelab.tasks.spec import IGNORE_INDEX, Batch, Features, Predicted, TaskSpec, without_columns

logger = logging.getLogger(__name__)


class Params(BaseModel):
    """Options of the causal_lm (SFT) task (validated from ``task.params``).

    The prompt format is the model's own chat template; ``template`` only builds the user message of
    source/target pairs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(
        default=512, ge=8, le=32768, description="Tokens per conversation; longer ones are cut at the end."
    )
    packing: bool = Field(
        default=False,
        description="Train on micro-batches packed into one row (no padding); attention stays per sequence.",
    )
    template: str | None = Field(
        default=None,
        description="Rows are source/target pairs: the user message is this text with {text} replaced by "
        "the source, the reply is the target; also wraps prediction inputs. null: rows are conversations.",
    )
    source_words: int | None = Field(
        default=None, ge=1, description="With template: only the source's first N words go in; null: all."
    )

    @field_validator("template")
    @classmethod
    def _has_text(cls, value: str | None) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError("the template must contain {text}")
        return value


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], reply_next: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TunelabError("the model has no chat template (chat_template.jinja); use a chat/instruct model")
    rendered = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=reply_next)
    return str(rendered)


def chat_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """``messages`` rendered by the model's chat template, ending where the assistant speaks next.

    The one prompt builder of training, prediction and serving.
    """
    return _render(tokenizer, messages, reply_next=True)


def response_spans(
    tokenizer: Any, messages: Sequence[Mapping[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant response, EOS included.

    A span starts where the template's generation prompt for that turn ends and stops right after
    the EOS token that closes the response. A template that does not render conversations
    incrementally, or does not close responses with EOS, cannot be trained on safely: refused.
    """
    text, eos = _render(tokenizer, messages), tokenizer.eos_token
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(chat_prompt(tokenizer, messages[:i]))
        upto = _render(tokenizer, messages[: i + 1])
        end = text.find(eos, start) if text.startswith(upto) else -1
        if end < 0 or end >= len(upto):
            raise TunelabError(
                f"the chat template does not end assistant turns with the EOS token {eos!r} or does not "
                "render conversations incrementally; causal_lm needs a template that does"
            )
        spans.append((start, end + len(eos)))
    return text, spans


def _labels(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Token ids inside a response span (a token overlapping it), ``IGNORE_INDEX`` elsewhere."""
    tok = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # (T, 2) char start/end per token
    bounds = np.asarray(spans, dtype=np.int64).reshape(-1, 2)  # (S, 2)
    inside = ((tok[:, None, 0] < bounds[None, :, 1]) & (tok[:, None, 1] > bounds[None, :, 0])).any(axis=1)
    labels: list[int] = np.where(inside, np.asarray(ids), IGNORE_INDEX).tolist()
    return labels


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Conversations -> input ids (template-rendered, truncated) and response-only labels."""
    rendered = [response_spans(tokenizer, messages) for messages in batch["messages"]]
    encoded = tokenizer(
        [text for text, _ in rendered],
        add_special_tokens=False,  # the template holds every special token the model expects
        truncation=True,
        max_length=params.max_length,
        return_offsets_mapping=True,
        verbose=False,
    )
    labels = [
        _labels(ids, offsets, spans)
        for ids, offsets, (_, spans) in zip(
            encoded["input_ids"], encoded["offset_mapping"], rendered, strict=True
        )
    ]
    cut = sum(len(ids) == params.max_length for ids in encoded["input_ids"])
    if cut:
        logger.info(
            "%d conversations cut at max_length=%d (their last response loses its EOS)",
            cut,
            params.max_length,
        )
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "labels": labels,
        "example_id": batch["example_id"],
    }


def collator(tokenizer: Any, params: Params) -> Any:
    """Pad per batch: ids with the pad id, attention mask with 0, labels with -100 (never by pad id)."""
    pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, return_tensors="pt")
    return without_columns(pad, ["example_id"])


def train_collator(tokenizer: Any, params: Params) -> Any:
    """Training batches: packed into one row with per-sequence ``position_ids`` when ``packing``.

    Evaluation keeps :func:`collator` (one row per example), because its outputs are per example.
    ``use_cache=False`` matters: transformers only derives the block-diagonal mask from packed
    ``position_ids`` when no KV cache is built.
    """
    if not params.packing:
        return collator(tokenizer, params)
    # transformers leaves this __init__ unannotated; `unused-ignore`: only the strict flags report it.
    flatten = DataCollatorWithFlattening(  # type: ignore[no-untyped-call, unused-ignore]
        return_position_ids=True, separator_id=IGNORE_INDEX
    )

    def pack(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {**flatten(rows), "use_cache": False}

    return without_columns(pack, ["example_id", "attention_mask"])


def count_targets(batch: Mapping[str, torch.Tensor], params: Any) -> torch.Tensor:
    """Targets the model's own loss averages over: labels after the next-token shift."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def user_message(text: str, params: Params) -> str:
    """``text`` as the user says it: inside ``template`` (cut to ``source_words``) when set, else as is."""
    if params.template is None:
        return text
    words = text.split()
    return params.template.replace("{text}", " ".join(words[: params.source_words or len(words)]))


def _pairs_as_conversations(pairs: Any, params: Params) -> Any:
    """Source/target rows (``text`` / ``target``) -> one user + assistant conversation each."""
    return pairs.map(
        lambda row: {
            "messages": [
                {"role": "user", "content": user_message(row["text"], params)},
                {"role": "assistant", "content": row["target"]},
            ]
        },
        remove_columns=pairs.column_names,
        keep_in_memory=True,
    )


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Conversations in any accepted row shape (``tunelab.data.conversations``); bad rows as file:line.

    With ``template``: source/target pairs, read and checked by ``seq2seq.load_data``.
    """
    if params.template is None:
        return load_conversation_data(cfg, seed)
    data = seq2seq.load_data(cfg, seq2seq.Params(), seed)
    return TaskData(
        train=_pairs_as_conversations(data.train, params),
        dev=_pairs_as_conversations(data.dev, params),
        test=None if data.test is None else _pairs_as_conversations(data.test, params),
        labels=[],
    )


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One file of conversations (or, with ``template``, source/target pairs) to score (``tunelab eval``)."""
    if params.template is None:
        return load_conversation_file(path)
    return _pairs_as_conversations(seq2seq.read_eval(path, columns, seq2seq.Params(), labels), params)


def generation_prompt(record: Mapping[str, Any], tokenizer: Any, params: Params) -> str:
    """A prediction record's ``text`` (in ``template`` when set) as a user message, rendered for the reply."""
    return chat_prompt(tokenizer, [{"role": "user", "content": user_message(record["text"], params)}])


def refuse_postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Predictions of this task are generated text (``generation_prompt``), not a forward's outputs."""
    raise TunelabError("causal_lm predictions are generated: use tunelab.inference.predict.predict_records")


def check_model(config: Any, params: Params) -> None:
    """Instruction tuning needs a decoder (a causal LM head)."""
    if not is_causal(config):
        raise ConfigError(
            f"model.name_or_path: a {config.model_type} model is not a causal LM; causal_lm needs a decoder "
            "such as smollm2-135m-instruct"
        )


TASK = TaskSpec(
    name="causal_lm",
    params=Params,
    model_class=AutoModelForCausalLM,
    head_modules=(),
    metric_names=("perplexity", "token_loss"),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=refuse_postprocess,
    metrics=metrics,
    input_fields=("text",),
    outputs=row_token_loss,
    loss_terms=token_loss_terms,
    check_model=check_model,
    train_collator=train_collator,
    count_targets=count_targets,
    generation_prompt=generation_prompt,
    pipeline_tag="text-generation",
)
