"""Language-model pretraining on plain text: masked LM (BERT-style) or causal LM, continued or from scratch.

Texts are tokenised with their special tokens, concatenated and cut into blocks of ``max_length``
tokens (or kept one line per example with ``line_by_line``). Masking is dynamic: transformers'
``DataCollatorForLanguageModeling`` draws new masks every time a batch is built, so each epoch sees
different masked positions (RoBERTa, Liu et al. 2019). Dev perplexity is ``exp`` of the mean loss per
predicted token over the whole dev split, with masks drawn from a fixed seed so evaluations compare.

Prediction (``tunelab predict``, the server's ``/v1/predict``) keeps one feature per input text and
draws no masks: a masked LM fills the input's own mask tokens (the ``TOP_K`` likeliest tokens for
each, as Hugging Face's fill-mask pipeline does), a causal LM scores the text (its perplexity).

``from_scratch`` asks training to first train a tokenizer on the corpus and build a small random-init
BERT or Llama (``tunelab.models.scratch``); the saved ``best/`` is a plain HF directory that every other
task fine-tunes directly (the MLM head is dropped, a fresh task head is added).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import DataCollatorForLanguageModeling
from transformers.modeling_outputs import MaskedLMOutput, Seq2SeqLMOutput

from tunelab.config import DataConfig
from tunelab.data import Columns, TaskData, load_text_data, load_text_file
from tunelab.errors import ConfigError
from tunelab.models.architectures import LanguageModel, is_causal
from tunelab.models.scratch import corpus_texts, init_from_scratch
from tunelab.tasks.schemas import ServeSchema, TextsRequest, text_records
from tunelab.tasks.spec import IGNORE_INDEX, Batch, Features, Predicted, TaskSpec

TOP_K = 5  # fill-mask candidates per mask token
QUERY_KEYS = ("labels", "masked")  # batch keys the forward must not see: targets, and the mask positions


class ScratchParams(BaseModel):
    """The tokenizer and small random-init model to build before training (``task.params.from_scratch``).

    Shared by lm_pretrain (bert, modernbert, llama) and seq2seq (t5); ``tunelab.models.scratch`` builds it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["bert", "modernbert", "llama", "t5"] = Field(
        default="bert",
        description="bert or modernbert (encoders, objective mlm), llama (decoder, objective clm) or t5 "
        "(task seq2seq). modernbert is pre-norm with rotary positions and scores only masked tokens: it "
        "leaves the MLM plateau in far fewer steps than post-norm bert.",
    )
    tokenizer: Literal["wordpiece", "char"] = Field(
        default="wordpiece", description="wordpiece sub-words, or one token per character (Chinese)."
    )
    vocab_size: int = Field(default=8000, ge=16, description="Upper bound on the trained vocabulary.")
    min_frequency: int = Field(default=2, ge=1, description="Drop tokens/characters rarer than this.")
    hidden_size: int = Field(default=256, gt=0, description="Model width.")
    layers: int = Field(default=4, gt=0, description="Transformer layers.")
    heads: int = Field(default=4, gt=0, description="Attention heads; must divide hidden_size.")
    intermediate_size: int | None = Field(
        default=None,
        gt=0,
        description="Feed-forward width; default 4 * hidden_size (2 * hidden_size for modernbert, whose "
        "gated GeGLU feed-forward has three matrices instead of two).",
    )
    dropout: float = Field(
        default=0.1, ge=0, lt=1, description="Dropout rate of bert, modernbert and t5 (llama trains without)."
    )
    max_position_embeddings: int = Field(
        default=512, gt=0, description="Longest input the model can take (also the tokenizer's limit)."
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchParams:
        if self.hidden_size % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden_size ({self.hidden_size})")
        return self


class Params(BaseModel):
    """Options of the lm_pretrain task (validated from ``task.params``).

    The objective must match a from-scratch architecture (encoders mlm, llama clm; t5 is seq2seq's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Literal["mlm", "clm"] = Field(
        default="mlm", description="mlm: masked LM (BERT); clm: next-token causal LM (Llama, GPT)."
    )
    mlm_probability: float = Field(default=0.15, gt=0, lt=1, description="Share of tokens masked (mlm).")
    whole_word_mask: bool = Field(
        default=False,
        description="Mask all sub-words of a word together (mlm, sub-word tokenizers; not for char).",
    )
    max_length: int = Field(default=128, ge=8, le=8192, description="Tokens per block (or per line).")
    line_by_line: bool = Field(
        default=False, description="One example per line (truncated) instead of concatenated blocks."
    )
    from_scratch: ScratchParams | None = Field(
        default=None,
        description="Train a tokenizer and a random-init model first (model.name_or_path must be 'scratch').",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        scratch = self.from_scratch
        if self.whole_word_mask and self.objective != "mlm":
            raise ValueError("whole_word_mask needs objective mlm")
        if scratch is None:
            return self
        wanted = {"bert": "mlm", "modernbert": "mlm", "llama": "clm"}.get(scratch.architecture)
        if wanted is None:
            raise ValueError(
                f"from_scratch.architecture {scratch.architecture} is an encoder-decoder: task seq2seq"
            )
        if self.objective != wanted:
            raise ValueError(f"from_scratch.architecture {scratch.architecture} trains objective {wanted}")
        if self.whole_word_mask and scratch.tokenizer == "char":
            raise ValueError("whole_word_mask with a char tokenizer would mask whole sentences; turn it off")
        if self.max_length > scratch.max_position_embeddings:
            raise ValueError("max_length exceeds from_scratch.max_position_embeddings")
        return self


def group_blocks(columns: Mapping[str, list[list[int]]], block: int) -> Features:
    """Concatenate each column's rows and cut into ``block``-long pieces; the last piece may be shorter.

    Every column (input_ids, attention_mask, special_tokens_mask, offset_mapping) is cut at the same
    positions, so the pieces stay aligned. Keeping the short tail loses no text of a small corpus.
    """
    out: Features = {}
    for name, rows in columns.items():
        flat = [value for row in rows for value in row]
        out[name] = [flat[i : i + block] for i in range(0, len(flat), block)]
    return out


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Tokenise texts (with special tokens and their mask), then group into blocks unless line_by_line."""
    encoded = tokenizer(
        batch["text"],
        truncation=params.line_by_line,
        max_length=params.max_length if params.line_by_line else None,
        return_special_tokens_mask=True,
        return_offsets_mapping=params.whole_word_mask,
        return_token_type_ids=False,
        verbose=False,
    )
    columns = dict(encoded)
    return columns if params.line_by_line else group_blocks(columns, params.max_length)


def _pad_offsets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pad ``offset_mapping`` with (0, 0) to the longest row: ``tokenizer.pad`` leaves nested lists alone.

    Padded positions are special in ``special_tokens_mask`` (the tokenizer pads it with 1), so they are
    never masked whatever their offsets.
    """
    longest = max(len(row["input_ids"]) for row in rows)
    return [
        {**row, "offset_mapping": list(row["offset_mapping"]) + [(0, 0)] * (longest - len(row["input_ids"]))}
        for row in rows
    ]


def predict_preprocess(batch: Batch, tokenizer: Any, params: Params) -> Features:
    """One feature per prediction record (truncated to ``max_length``), keeping its ``example_id``."""
    encoded = tokenizer(
        batch["text"], truncation=True, max_length=params.max_length, return_token_type_ids=False
    )
    return {**dict(encoded), "example_id": batch["example_id"]}


def _query_batch(rows: list[dict[str, Any]], tokenizer: Any, params: Params) -> dict[str, Any]:
    """Prediction rows, padded and never masked: where to fill (mlm), or every token as target (clm)."""
    batch = dict(
        tokenizer.pad(
            [{k: v for k, v in row.items() if k != "example_id"} for row in rows], return_tensors="pt"
        )
    )
    if params.objective == "mlm":
        batch["masked"] = batch["input_ids"] == tokenizer.mask_token_id  # (B, T)
    else:
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    return batch


def collator(tokenizer: Any, params: Params, seed: int | None = None) -> Any:
    """Dynamic masking (mlm) or next-token labels (clm; the model shifts them); pads per batch.

    ``seed=None`` draws masks from torch's global RNG, which the training checkpoint saves, so a
    resumed run masks exactly as the uninterrupted one; evaluation passes a fixed seed instead.
    Prediction rows (``predict_preprocess``: they carry ``example_id``) are padded and left unmasked.
    """
    collate = DataCollatorForLanguageModeling(
        tokenizer,
        mlm=params.objective == "mlm",
        mlm_probability=params.mlm_probability if params.objective == "mlm" else None,
        whole_word_mask=params.whole_word_mask,
        mask_replace_prob=1.0 if params.whole_word_mask else 0.8,
        random_replace_prob=0.0 if params.whole_word_mask else 0.1,
        seed=seed,
    )

    def collate_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
        if "example_id" in rows[0]:
            return _query_batch(rows, tokenizer, params)
        batch: dict[str, Any] = collate(_pad_offsets(rows) if params.whole_word_mask else rows)
        return batch

    return collate_rows


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Plain-text splits: .txt lines (one document each) or a table's text column; bad lines as file:line."""
    return load_text_data(cfg, seed)


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One corpus file to score (``tunelab eval``)."""
    return load_text_file(path, columns.text)


def row_token_loss(outputs: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per row: summed cross-entropy over its predicted tokens and their count, (B,) each.

    Only these two numbers per row are gathered: the (B, T, vocab) logits of a whole split would not
    fit in memory. Masked LMs (their output is a ``MaskedLMOutput``) are scored where the collator
    masked (labels != -100) and encoder-decoders (``Seq2SeqLMOutput``) at every labelled target
    position, both unshifted; causal LMs predict token t+1 from position t, so logits and labels are
    shifted as the model's own loss does. Virtual tokens a soft prompt prepends have no labels.
    """
    logits, labels = outputs.logits.float(), batch["labels"]  # (B, T, V), (B, T)
    logits = logits[:, logits.shape[1] - labels.shape[1] :]  # drop soft-prompt positions (prompt tuning)
    if not isinstance(outputs, MaskedLMOutput | Seq2SeqLMOutput):
        logits, labels = logits[:, :-1], labels[:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, T)
    return {"token_loss_sum": per_token.sum(dim=1), "n_tokens": (labels != IGNORE_INDEX).sum(dim=1)}


def lm_outputs(outputs: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-row token losses (``row_token_loss``), or for fill-mask queries the top tokens everywhere.

    A query batch (``masked``, (B, T)) gives ``top_ids`` and ``top_scores`` (B, T, ``TOP_K``), the
    likeliest tokens and their probabilities at every position; ``masked`` says which to report.
    """
    if "masked" not in batch:
        return row_token_loss(outputs, batch)
    top = outputs.logits.float().softmax(-1).topk(TOP_K, dim=-1)  # (B, T, k)
    return {"top_ids": top.indices, "top_scores": top.values, "masked": batch["masked"]}


def loss_terms(outputs: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(summed token loss, predicted tokens) of a batch: the eval ``loss`` is the mean token loss.

    None for a batch without targets (fill-mask queries).
    """
    if "labels" not in batch:
        return None
    rows = row_token_loss(outputs, batch)
    return rows["token_loss_sum"].sum(), rows["n_tokens"].sum()


def count_targets(batch: Mapping[str, torch.Tensor], params: Params) -> torch.Tensor:
    """Targets the model's loss averages over: masked tokens (mlm), next tokens after the shift (clm)."""
    labels = batch["labels"] if params.objective == "mlm" else batch["labels"][:, 1:]
    return (labels != IGNORE_INDEX).sum()


def metrics(predicted: Predicted) -> dict[str, Any]:
    """Perplexity = exp(summed token loss / predicted tokens) over the split (for MLM: masked tokens)."""
    total = float(predicted.arrays["token_loss_sum"].astype("float64").sum())
    count = int(predicted.arrays["n_tokens"].sum())
    loss = total / max(count, 1)
    return {"perplexity": float(math.exp(min(loss, 700.0))), "token_loss": loss, "n_tokens": count}


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Per input: ``fills`` (mlm; per mask token the top tokens, likeliest first) or ``perplexity`` (clm).

    A causal LM's perplexity is exp(mean next-token loss) over the input's tokens after the first.
    """
    arrays = predicted.arrays
    if "top_ids" not in arrays:
        losses, counts = arrays["token_loss_sum"].astype(np.float64), arrays["n_tokens"].astype(np.int64)
        return [
            {"perplexity": float(math.exp(min(loss / max(n, 1), 700.0))), "n_tokens": int(n)}
            for loss, n in zip(losses, counts, strict=True)
        ]
    decode = predicted.tokenizer.decode
    out = []
    for ids, scores, masked in zip(arrays["top_ids"], arrays["top_scores"], arrays["masked"], strict=True):
        fills = [
            [
                {"token": decode([int(i)]).strip(), "score": float(p)}
                for i, p in zip(ids[t], scores[t], strict=True)
            ]
            for t in np.flatnonzero(masked > 0)
        ]
        out.append({"fills": fills})
    return out


class Fill(BaseModel):
    """One candidate for a mask token and its probability."""

    token: str
    score: float


class LMPrediction(BaseModel):
    """One input's answer: fills of its mask tokens (masked LM) or its perplexity (causal LM)."""

    fills: list[list[Fill]] | None = Field(
        default=None, description=f"Masked LM: per mask token in the input, the {TOP_K} likeliest tokens."
    )
    perplexity: float | None = Field(default=None, description="Causal LM: exp(mean next-token loss).")
    n_tokens: int | None = Field(default=None, description="Causal LM: the tokens scored.")


class LMResponse(BaseModel):
    """``/v1/predict`` response of a language model: the model id and one answer per input."""

    model: str
    predictions: list[LMPrediction] = Field(description="One per input, in input order.")


def lm_response(model: str, predictions: Sequence[dict[str, Any]]) -> LMResponse:
    """Map lm_pretrain's postprocess output to the response schema."""
    return LMResponse(model=model, predictions=[LMPrediction.model_validate(p) for p in predictions])


def from_scratch(params: Any) -> bool:
    """Whether the run builds its own tokenizer and random-init model (``from_scratch`` set)."""
    return params.from_scratch is not None


def init_model(params: Any, data: TaskData, base: Path, dest: Path, seed: int) -> Path:
    """A from-scratch run's start: tokenizer trained on the train texts + random init, built at ``dest``.

    ``text`` (and seq2seq's ``target``) columns are the corpus, so the decoder's vocabulary is learned
    too. Without ``from_scratch`` the run starts from ``base`` as loaded.
    """
    if params.from_scratch is None:
        return base
    return init_from_scratch(params.from_scratch, corpus_texts(data.train), dest, seed)


def check_model(config: Any, params: Params) -> None:
    """The objective must match the model: mlm on encoders, clm on decoders."""
    wanted = "clm" if is_causal(config) else "mlm"
    if params.objective != wanted:
        raise ConfigError(
            f"task.params.objective: {params.objective!r} does not fit a {config.model_type} model; "
            f"{config.model_type} trains with objective {wanted!r}"
        )


TASK = TaskSpec(
    name="lm_pretrain",
    params=Params,
    model_class=LanguageModel,
    head_modules=(),
    metric_names=("perplexity", "token_loss"),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
    outputs=lm_outputs,
    loss_terms=loss_terms,
    target_keys=QUERY_KEYS,
    check_model=check_model,
    count_targets=count_targets,
    from_scratch=from_scratch,
    init_model=init_model,
    predict_preprocess=predict_preprocess,
    serve_schema=ServeSchema(TextsRequest, text_records, LMResponse, lm_response),
)
