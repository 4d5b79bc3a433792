"""Token classification (NER): word tags -> subword labels, entity spans back, seqeval entity scores.

Words come from the data (CoNLL / JSONL tokens) or, for raw text, from :func:`split_words`, which
keeps character offsets so predicted entities point into the input text. CJK characters are one word
each, so a character-level model (Chinese NER) aligns one tag per character.

A sentence longer than ``max_length`` is split into consecutive chunks by the fast tokenizer's
overflow (``return_overflowing_tokens``), never truncated; each word's tag is read at its first
subword, in whichever chunk holds it, so the chunks stitch back exactly. Entity scoring is seqeval's
(CoNLL-2000 conlleval rules for BIO; strict mode for BIOES).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
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
from tunelab.tasks.schemas import ServeSchema, TextsRequest, text_records
from tunelab.tasks.spec import (
    IGNORE_INDEX,
    Batch,
    Features,
    Predicted,
    TaskSpec,
    count_labelled_tokens,
    has_column,
    without_columns,
)

NOT_MODEL_INPUTS = ("example_id", "word_index")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# One CJK character; or a run of other word characters (with a leading @/# and inner ' - .); or one
# other non-space character: close to how tweets and news are tokenised in CoNLL files.
_WORD = re.compile(rf"[{_CJK}]|[@#]?[^\W{_CJK}]+(?:['’\-.][^\W{_CJK}]+)*|[^\w\s]")


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


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Raw text -> words and their character spans (CJK: one character per word)."""
    matches = list(_WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Checked CoNLL / JSONL tagged sentences (``tokens``, ``tags``), plus the baseline's tags.

    The token-frequency baseline learns from the train split only and tags dev and test, so its
    score sits beside the model's on the same rows (column ``baseline_tags``).
    """
    data = load_tagged_data(cfg, params.scheme, params.labels, seed)
    lexicon = frequency_lexicon(data.train["tokens"], data.train["tags"])

    def tagged(split: Any) -> Any:
        return split.add_column("baseline_tags", [lexicon_tags(lexicon, t) for t in split["tokens"]])

    return TaskData(
        train=data.train,
        dev=tagged(data.dev),
        test=tagged(data.test) if data.test is not None else None,
        labels=data.labels,
    )


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One checked CoNLL / JSONL file; a tag outside ``labels`` or the scheme is an error with file:line."""
    return read_tagged_file(path, params.scheme, labels)


def frequency_lexicon(tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> dict[str, str]:
    """Most frequent tag of each train token (exact form, and lowercased as a fallback key)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for words, word_tags in zip(tokens, tags, strict=True):
        for word, tag in zip(words, word_tags, strict=True):
            counts[word][tag] += 1
            counts[word.lower()][tag] += 1
    return {word: c.most_common(1)[0][0] for word, c in counts.items()}


def lexicon_tags(lexicon: Mapping[str, str], words: Sequence[str]) -> list[str]:
    """The baseline tagger: each word's most frequent train tag, ``O`` for unseen words."""
    return [lexicon.get(w, lexicon.get(w.lower(), "O")) for w in words]


def _words(batch: Batch) -> list[list[str]]:
    return batch["tokens"] if "tokens" in batch else [split_words(text)[0] for text in batch["text"]]


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Words -> subword features in chunks of ``max_length``; tags -> labels on first (or all) subwords.

    Each feature carries ``example_id`` and ``word_index`` (the word whose first subword sits at each
    position, -1 elsewhere), which postprocess uses to read one tag per word; the collator drops both.
    """
    words = _words(batch)
    enc = tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=params.max_length,
        return_overflowing_tokens=True,
        padding=False,
    )
    rows = enc.pop("overflow_to_sample_mapping")
    tag_ids = [np.asarray([label2id[t] for t in tags], dtype=np.int64) for tags in batch.get("tags") or []]
    out: Features = {k: list(v) for k, v in enc.items()}
    out["example_id"], out["word_index"] = [], []
    if tag_ids:
        out["labels"] = []
    last_word: dict[int, int] = {}  # batch row -> last word seen in its previous chunk
    for f, row in enumerate(rows):
        wid = np.asarray([-1 if w is None else w for w in enc.word_ids(f)], dtype=np.int64)
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


def _token_spans(words: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of ``words`` in ``" ".join(words)``."""
    starts = np.cumsum([0, *(len(w) + 1 for w in words[:-1])])
    return [(int(start), int(start) + len(w)) for start, w in zip(starts, words, strict=True)]


def _example_words(examples: Any) -> tuple[list[list[str]], list[list[tuple[int, int]]], list[str]]:
    """Words, their character spans and the text they index into, per example.

    Raw text keeps its own offsets; a tokenised sentence is read as its tokens joined by spaces.
    """
    if has_column(examples, "tokens"):
        words = [list(ws) for ws in examples["tokens"]]
        return words, [_token_spans(ws) for ws in words], [" ".join(ws) for ws in words]
    pairs = [split_words(text) for text in examples["text"]]
    return [w for w, _ in pairs], [s for _, s in pairs], list(examples["text"])


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Entities with character offsets into the input text and a score (mean word probability)."""
    words, spans, texts = _example_words(predicted.examples)
    tags, scores = word_predictions(predicted, [len(w) for w in words])
    labels = predicted.labels
    out = []
    for tag_ids, score, span, text in zip(tags, scores, spans, texts, strict=True):
        entities = []
        for kind, first, last in get_entities([labels[i] for i in tag_ids]):
            start, end = span[first][0], span[last][1]
            entities.append(
                {
                    "type": kind,
                    "text": text[start:end],
                    "start": start,
                    "end": end,
                    "score": float(score[first : last + 1].mean()),
                }
            )
        out.append({"entities": entities})
    return out


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
    """Entity-level P/R/F1 (micro, macro, per type), token accuracy, and the frequency baseline's F1."""
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
    if has_column(examples, "baseline_tags"):
        baseline = _entity_scores(gold, [list(t) for t in examples["baseline_tags"]], predicted.params.scheme)
        out |= {f"baseline_{k}": baseline[k] for k in ("precision", "recall", "f1")}
    return out


class Entity(BaseModel):
    """One predicted entity: its type, text and character span in the input."""

    type: str = Field(description="Entity type, e.g. person.")
    text: str = Field(description="The entity's text, equal to inputs[start:end].")
    start: int = Field(description="Character offset of the first character in the input.")
    end: int = Field(description="Character offset just past the last character.")
    score: float = Field(description="Mean probability of the entity's word tags.")


class EntitiesPrediction(BaseModel):
    """The entities found in one input text."""

    entities: list[Entity] = Field(description="Entities in text order.")


class TokenClassificationResponse(BaseModel):
    """``/v1/predict`` response of a token classification model: the model id and one result per input."""

    model: str
    predictions: list[EntitiesPrediction] = Field(description="One per input, in input order.")


def token_classification_response(
    model: str, predictions: Sequence[dict[str, Any]]
) -> TokenClassificationResponse:
    """Map the token classification task's postprocess output to the response schema."""
    return TokenClassificationResponse(
        model=model, predictions=[EntitiesPrediction.model_validate(p) for p in predictions]
    )


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
    serve_schema=ServeSchema(
        TextsRequest, text_records, TokenClassificationResponse, token_classification_response
    ),
    pipeline_tag="token-classification",
)
