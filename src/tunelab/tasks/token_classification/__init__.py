"""Token classification (NER): word tags -> subword labels, entity spans back, seqeval entity scores.

Words come from the data (CoNLL / JSONL tokens), from the caller (a prediction record whose ``text``
is a list of words: ``predict --tokens``, ``{"tokens": [[...]]}`` at ``/v1/predict``) or, for raw
text, from ``words.split_words`` (``words.py`` says when raw text is refused instead).

A sentence longer than ``max_length`` is split into consecutive chunks by the fast tokenizer's
overflow (``return_overflowing_tokens``), never truncated; each word's tag is read at its first
subword, in whichever chunk holds it, so the chunks stitch back exactly. Entity scoring is seqeval's
(CoNLL-2000 conlleval rules for BIO; strict mode for BIOES).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOBES
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from tunelab.config import DataConfig
from tunelab.data import Columns, TaskData
from tunelab.data.tagging import load_tagged_data, read_tagged_file
from tunelab.tasks.schemas import ServeSchema
from tunelab.tasks.spec import (
    IGNORE_INDEX,
    Batch,
    Explainable,
    Features,
    Predicted,
    TaskSpec,
    count_labelled_tokens,
    encoding_words,
    has_column,
    without_columns,
)
from tunelab.tasks.token_classification.schema import (
    TokenClassificationResponse,
    TokensRequest,
    token_classification_response,
    token_records,
)
from tunelab.tasks.token_classification.words import (
    frequency_lexicon,
    lexicon_tags,
    raw_words,
    split_words,
    token_spans,
    unspaced_refusal,
    unspaced_text,
)

logger = logging.getLogger(__name__)

NOT_MODEL_INPUTS = ("example_id", "word_index")
UNKNOWN_WARN_SHARE = 0.05  # above this share of [UNK] sub-words the tokenizer does not cover the data


class Params(BaseModel):
    """Options of the token_classification (NER) task (validated from ``task.params``).

    ``scheme`` decides which tags and transitions are valid data and how seqeval groups entities.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] | None = Field(
        default=None,
        min_length=2,
        description="Tag names in id order; default: O, then the train file's tags by type and prefix.",
    )
    scheme: Literal["BIO", "IOB2", "BIOES"] = Field(
        default="BIO", description="Tagging scheme; tags and transitions outside it are data errors."
    )
    subword_labels: Literal["first", "all"] = Field(
        default="first",
        description="Train on each word's first subword only (others ignored) or on all its subwords.",
    )
    max_length: int = Field(
        default=128, gt=8, le=8192, description="Tokens per chunk; longer sentences are split, not cut."
    )
    unspaced_text: Literal["split", "refuse"] | None = Field(
        default=None,
        description="Raw text in a script written without spaces (CJK, Thai) at prediction: split (one "
        "CJK character a word) or refuse (pass pre-split words); null: refuse when over 5% of such train "
        "words are longer than one character (set at fit).",
    )
    baseline_lexicon: dict[str, str] | None = Field(
        default=None,
        description="The frequency baseline: word -> its most frequent train tag (entity tags only); null: "
        "learnt from the train split (set at fit), so eval scores the baseline training reported.",
    )


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Checked CoNLL / JSONL tagged sentences (``tokens``, ``tags``)."""
    return load_tagged_data(cfg, params.scheme, params.labels, seed)


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One checked CoNLL / JSONL file; a tag outside ``labels`` or the scheme is an error with file:line."""
    return read_tagged_file(path, params.scheme, labels)


def fit(params: Params, train: Any, labels: Sequence[str]) -> Params:
    """Fix what prediction and eval need from train: the baseline's lexicon, how raw text splits."""
    update: dict[str, Any] = {}
    if params.baseline_lexicon is None:
        update["baseline_lexicon"] = frequency_lexicon(train["tokens"], train["tags"])
    if params.unspaced_text is None:
        update["unspaced_text"] = unspaced_text(train["tokens"])
    return params.model_copy(update=update)


def _words(batch: Batch, params: Params) -> list[list[str]]:
    """Each example's words: its ``tokens``, or its ``text`` as given words (a list) or split raw text."""
    if "tokens" in batch:
        return batch["tokens"]
    return [
        t if isinstance(t, list) else raw_words(t, params.unspaced_text, i)
        for i, t in enumerate(batch["text"])
    ]


def check_input(record: Mapping[str, Any], params: Params) -> str | None:
    """Why the model cannot take this prediction record (raw text it cannot split as training did)."""
    text = record["text"]
    return None if isinstance(text, list) else unspaced_refusal(text, params.unspaced_text)


def _warn_unknown(
    words: Sequence[Sequence[str]],
    input_ids: Sequence[Sequence[int]],
    word_ids: Sequence[np.ndarray],
    rows: Sequence[int],
    unk_id: int | None,
) -> None:
    """Log the share of word sub-words the tokenizer maps to its unknown token when it is over 5%.

    An ``[UNK]`` hides which word it was, so a tokenizer that does not cover the data's script (an
    English vocabulary on Japanese) leaves the model guessing from context alone.
    """
    if unk_id is None:
        return
    subwords, unknown, examples = 0, 0, dict[str, None]()
    for ids, wid, row in zip(input_ids, word_ids, rows, strict=True):
        unk = (np.asarray(ids) == unk_id) & (wid >= 0)
        subwords, unknown = subwords + int((wid >= 0).sum()), unknown + int(unk.sum())
        examples.update(dict.fromkeys(words[row][w] for w in wid[unk]))
    if subwords and unknown > UNKNOWN_WARN_SHARE * subwords:
        logger.warning(
            "%.1f%% of the sub-words of %d tagged sentences are the tokenizer's unknown token (e.g. in %s): "
            "the model cannot tell those words apart. Pick a model whose tokenizer covers this script "
            "(a multilingual or a language-specific one).",
            100 * unknown / subwords,
            len(words),
            ", ".join(repr(w) for w in list(examples)[:3]),
        )


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Words -> subword features in chunks of ``max_length``; tags -> labels on first (or all) subwords.

    Each feature carries ``example_id`` and ``word_index`` (the word whose first subword sits at each
    position, -1 elsewhere), which postprocess uses to read one tag per word; the collator drops both.
    The first batch of tagged sentences (``tokenize_dataset`` maps batches in order) is checked for
    ``[UNK]`` sub-words, so a split logs it once; prediction requests are not, so a server never does.
    """
    words = _words(batch, params)
    enc = tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=params.max_length,
        return_overflowing_tokens=True,
        padding=False,
    )
    rows = enc.pop("overflow_to_sample_mapping")
    word_ids = [
        np.asarray([-1 if w is None else w for w in enc.word_ids(f)], dtype=np.int64)
        for f in range(len(rows))
    ]
    if batch.get("tags") and batch["example_id"][0] == 0:
        _warn_unknown(words, enc["input_ids"], word_ids, rows, tokenizer.unk_token_id)
    tag_ids = [np.asarray([label2id[t] for t in tags], dtype=np.int64) for tags in batch.get("tags") or []]
    out: Features = {k: list(v) for k, v in enc.items()}
    out["example_id"], out["word_index"] = [], []
    if tag_ids:
        out["labels"] = []
    last_word: dict[int, int] = {}  # batch row -> last word seen in its previous chunk
    for wid, row in zip(word_ids, rows, strict=True):
        previous = np.concatenate(([last_word.get(row, -1)], wid[:-1]))
        first = (wid >= 0) & (wid != previous)  # a word continued from the previous chunk is not first
        real = wid[wid >= 0]
        last_word[row] = int(real[-1]) if real.size else last_word.get(row, -1)
        out["example_id"].append(int(batch["example_id"][row]))
        out["word_index"].append(np.where(first, wid, -1).tolist())
        if tag_ids:
            target = first if params.subword_labels == "first" else wid >= 0
            out["labels"].append(np.where(target, tag_ids[row][np.maximum(wid, 0)], IGNORE_INDEX).tolist())
    return out


def collator(tokenizer: Any, params: Params) -> Any:
    """Pads inputs and labels (with -100); drops the bookkeeping columns."""
    pad = DataCollatorForTokenClassification(
        tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None
    )
    return without_columns(pad, NOT_MODEL_INPUTS)


def word_predictions(
    predicted: Predicted, n_words: Sequence[int]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per example: predicted tag id and its probability for every word.

    A word the tokenizer turns into no subword at all (e.g. a lone zero-width character) gets ``O``
    with score 0: the model never saw it.
    """
    logits = predicted.arrays["logits"].astype(np.float64)  # (F, T, C)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    best = probs.argmax(axis=-1)
    outside = list(predicted.labels).index("O") if "O" in predicted.labels else 0
    tags = [np.full(n, outside, dtype=np.int64) for n in n_words]
    scores = [np.zeros(n) for n in n_words]
    for f, (example, index) in enumerate(
        zip(predicted.features["example_id"], predicted.features["word_index"], strict=True)
    ):
        index = np.asarray(index)
        at = np.flatnonzero(index >= 0)
        tags[example][index[at]] = best[f, at]
        scores[example][index[at]] = probs[f, at, best[f, at]]
    return tags, scores


def _sentence(words: Sequence[str] | str) -> tuple[list[str], list[tuple[int, int]], str]:
    """Words, their character spans and the text they index into, of one example.

    Raw text keeps its own offsets; given words are read as joined by spaces.
    """
    if isinstance(words, str):
        return *split_words(words), words
    return list(words), token_spans(words), " ".join(words)


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Entities with character and word offsets into the input and a score (mean word probability)."""
    examples = predicted.examples
    column = examples["tokens"] if has_column(examples, "tokens") else examples["text"]
    sentences = [_sentence(example) for example in column]
    tags, scores = word_predictions(predicted, [len(words) for words, _, _ in sentences])
    labels = predicted.labels
    out = []
    for tag_ids, score, (_, span, text) in zip(tags, scores, sentences, strict=True):
        entities = []
        for kind, first, last in get_entities([labels[i] for i in tag_ids]):
            start, end = span[first][0], span[last][1]
            entities.append(
                {
                    "type": kind,
                    "text": text[start:end],
                    "start": start,
                    "end": end,
                    "word_start": first,
                    "word_end": last + 1,
                    "score": float(score[first : last + 1].mean()),
                }
            )
        out.append({"entities": entities})
    return out


def explain_input(record: Mapping[str, Any], tokenizer: Any, params: Params) -> Explainable:
    """The record's words (given, or split from raw text as prediction splits them) and their first chunk."""
    words, spans, text = _sentence(record["text"])
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=params.max_length)
    return Explainable(dict(enc), encoding_words(enc), words, spans, text)


def explain_words(prediction: Mapping[str, Any]) -> list[int]:
    """By default each predicted entity is explained through its first word's tag (B-type in BIO)."""
    return [entity["word_start"] for entity in prediction["entities"]]


def _entity_scores(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict[str, Any]:
    """Entity scores by seqeval: micro P/R/F1, macro F1 and per-type P/R/F1/support."""
    strict = {"mode": "strict", "scheme": IOBES} if scheme == "BIOES" else {}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **strict)
    micro, macro = report.pop("micro avg"), report.pop("macro avg")
    report.pop("weighted avg", None)
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "macro_f1": float(macro["f1-score"]),
        "per_type": {
            kind: {
                "precision": float(v["precision"]),
                "recall": float(v["recall"]),
                "f1": float(v["f1-score"]),
                "support": int(v["support"]),
            }
            for kind, v in report.items()
        },
    }


def metrics(predicted: Predicted) -> dict[str, Any]:
    """Entity-level P/R/F1 (micro, macro, per type), token accuracy, and the frequency baseline's F1.

    The baseline tags the same rows with the lexicon ``fit`` learnt on train and saved in the params,
    so training's report and ``tunelab eval`` of the saved model score the same baseline.
    """
    examples = predicted.examples
    if examples is None or not has_column(examples, "tags"):
        raise ValueError("token_classification metrics need the gold examples (evaluate(..., examples=...))")
    gold = [list(tags) for tags in examples["tags"]]
    tag_ids, _ = word_predictions(predicted, [len(g) for g in gold])
    pred = [[predicted.labels[i] for i in ids] for ids in tag_ids]
    flat_gold, flat_pred = (
        np.concatenate([np.asarray(g) for g in gold]),
        np.concatenate([np.asarray(p) for p in pred]),
    )
    out = {
        **_entity_scores(gold, pred, predicted.params.scheme),
        "token_accuracy": float((flat_gold == flat_pred).mean()),
    }
    lexicon = predicted.params.baseline_lexicon
    if lexicon is not None:
        tagged = [lexicon_tags(lexicon, words) for words in examples["tokens"]]
        baseline = _entity_scores(gold, tagged, predicted.params.scheme)
        out |= {f"baseline_{k}": baseline[k] for k in ("precision", "recall", "f1")}
    return out


TASK = TaskSpec(
    name="token_classification",
    params=Params,
    model_class=AutoModelForTokenClassification,
    head_modules=("classifier", "score"),
    metric_names=("f1", "macro_f1", "precision", "recall", "token_accuracy"),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
    count_targets=count_labelled_tokens,
    fit=fit,
    check_input=check_input,
    serve_schema=ServeSchema(
        TokensRequest, token_records, TokenClassificationResponse, token_classification_response
    ),
    pipeline_tag="token-classification",
    explain_input=explain_input,
    explain_words=explain_words,
)
