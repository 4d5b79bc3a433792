"""Extractive question answering (SQuAD v1.1 / v2): predict the answer span of a question in a context.

Examples have ``id``, ``question``, ``context`` and ``answers`` (``tunelab.data.squad``). A long
context becomes several doc-stride windows (``features``); the model (``AutoModelForQuestionAnswering``)
scores every token as answer start and end; ``spans`` picks the best span over all windows of an
example, or no answer (SQuAD v2); ``squad_metric`` scores EM/F1 with the official normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import datasets
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

from tunelab.config import DataConfig
from tunelab.data import TaskData
from tunelab.data.splits import subsample
from tunelab.data.squad import QAColumns, read_qa
from tunelab.tasks.qa.features import padded_offsets, tokenize_windows, training_labels
from tunelab.tasks.qa.spans import best_answers
from tunelab.tasks.qa.squad_metric import best_thresholds, squad_scores
from tunelab.tasks.schemas import RequestBody, ServeSchema
from tunelab.tasks.spec import Batch, Features, Predicted, TaskSpec, without_columns

FEATURE_ONLY = ("example_id", "offset_mapping")  # feature columns the model does not take
TARGETS = ("start_positions", "end_positions")


class Params(BaseModel):
    """Options of the qa (extractive question answering) task (validated from ``task.params``).

    Windows of ``max_length`` tokens overlap by ``doc_stride``, which must stay under half a window.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(
        default=384, gt=16, le=8192, description="Tokens per window (question + context)."
    )
    doc_stride: int = Field(
        default=128, gt=0, description="Tokens of context shared by consecutive windows of a long context."
    )
    n_best: int = Field(default=20, gt=0, description="Start and end candidates per window (k x k spans).")
    max_answer_length: int = Field(default=30, gt=0, description="Longest predicted answer, in tokens.")
    version_2_with_negative: bool = Field(
        default=True, description="SQuAD v2: questions may have no answer (predict '' when null wins)."
    )
    null_score_diff_threshold: float = Field(
        default=0.0, description="No answer when null score - best span score exceeds this (v2 only)."
    )

    @model_validator(mode="after")
    def _stride_fits(self) -> Params:
        if self.doc_stride >= self.max_length // 2:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) must be under half of max_length ({self.max_length}), "
                "or the windows would barely advance"
            )
        return self


def _dataset(cols: QAColumns, indices: list[int] | None) -> datasets.Dataset:
    if indices is not None:
        cols = {name: [values[i] for i in indices] for name, values in cols.items()}
    return datasets.Dataset.from_dict(cols)


def _split_by_context(cols: QAColumns, ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Train/dev question indices with every context (article) wholly on one side."""
    contexts = sorted(set(cols["context"]))
    order = np.random.default_rng(seed).permutation(len(contexts))
    n_dev = max(1, round(ratio * len(contexts)))
    dev = {contexts[i] for i in order[:n_dev]}
    dev_idx = [i for i, c in enumerate(cols["context"]) if c in dev]
    return [i for i, c in enumerate(cols["context"]) if c not in dev], dev_idx


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """SQuAD JSON / JSONL splits; without ``dev_file``, dev is split off train by context, seeded."""
    train = read_qa(cfg.train_file)
    dev = read_qa(cfg.dev_file) if cfg.dev_file else None
    test = read_qa(cfg.test_file) if cfg.test_file else None
    if dev is None:
        train_idx, dev_idx = _split_by_context(train, cfg.dev_ratio, seed)
        train, dev = ({k: [v[i] for i in idx] for k, v in train.items()} for idx in (train_idx, dev_idx))
    return TaskData(
        train=_dataset(train, subsample(len(train["id"]), cfg.max_train_samples, seed)),
        dev=_dataset(dev, subsample(len(dev["id"]), cfg.max_eval_samples, seed)),
        test=_dataset(test, subsample(len(test["id"]), cfg.max_eval_samples, seed)) if test else None,
        labels=[],
    )


def read_eval(path: Path, columns: Any, params: Params, labels: Any) -> datasets.Dataset:
    """One checked SQuAD JSON / JSONL file (``tunelab eval``)."""
    return _dataset(read_qa(path), None)


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Windows with ``example_id`` and context offsets; start/end targets when answers are given."""
    out = tokenize_windows(
        batch["question"], batch["context"], tokenizer, params.max_length, params.doc_stride
    )
    local = out.pop("example_index")
    out["example_id"] = [batch["example_id"][i] for i in local]
    if "answers" in batch:
        out["start_positions"], out["end_positions"] = training_labels(
            {**out, "example_index": local}, batch["answers"]
        )
    return out


def collator(tokenizer: Any, params: Params) -> Any:
    """Dynamic padding; ``example_id`` and ``offset_mapping`` stay with the features, not the model."""
    pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)
    return without_columns(pad, FEATURE_ONLY)


def outputs(out: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The QA ``outputs``: start and end logits per window token, (B, T) each."""
    return {"start_logits": out.start_logits, "end_logits": out.end_logits}


def loss_terms(out: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Summed (start CE + end CE) / 2 per window, as the model's own loss averages it, and the count."""
    if "start_positions" not in batch:
        return None
    ce = torch.nn.functional.cross_entropy
    total = ce(out.start_logits.float(), batch["start_positions"], reduction="sum") + ce(
        out.end_logits.float(), batch["end_positions"], reduction="sum"
    )
    return total / 2, torch.tensor(len(batch["start_positions"]))


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Per example: ``answer`` ('' = none), char ``start``/``end`` in its context, ``score``, ``n_best``."""
    params: Params = predicted.params
    start = predicted.arrays["start_logits"]
    return best_answers(
        start,
        predicted.arrays["end_logits"],
        padded_offsets(predicted.features["offset_mapping"], start.shape[1]),
        predicted.features["example_id"],
        predicted.examples["context"],
        params.n_best,
        params.max_answer_length,
        params.null_score_diff_threshold if params.version_2_with_negative else None,
    )


def metrics(predicted: Predicted) -> dict[str, Any]:
    """SQuAD ``exact_match`` / ``f1`` (percent); on v2 also HasAns_/NoAns_ splits and best_* thresholds."""
    preds = postprocess(predicted)
    golds = [a["text"] for a in predicted.examples["answers"]]
    out = squad_scores([p["answer"] for p in preds], golds)
    if predicted.params.version_2_with_negative:
        spans = [p["n_best"][0]["text"] if p["n_best"] else "" for p in preds]
        out.update(best_thresholds(spans, [p["null_score_diff"] for p in preds], golds))
    return out


class QAInput(RequestBody):
    """One question and the context to find its answer in."""

    question: str = Field(min_length=1, description="The question.")
    context: str = Field(min_length=1, description="The text that may hold the answer; any length.")


class QARequest(RequestBody):
    """``/v1/predict`` of a question answering model: one {question, context} pair or a list."""

    inputs: QAInput | Annotated[list[QAInput], Field(min_length=1)] = Field(
        description="One {question, context} pair or a list of them."
    )


class QAPrediction(BaseModel):
    """The answer to one question: a span of its context, or no answer (SQuAD v2)."""

    answer: str = Field(description="The answer, equal to context[start:end]; empty when no_answer.")
    start: int | None = Field(description="Character offset of the answer in the context; null if none.")
    end: int | None = Field(description="Character offset just past the answer; null if none.")
    score: float = Field(description="Probability of this answer among the n best spans and no-answer.")
    no_answer: bool = Field(description="True when the context holds no answer (SQuAD v2).")


class QAResponse(BaseModel):
    """``/v1/predict`` response of a question answering model: the model id and one answer per input."""

    model: str
    predictions: list[QAPrediction] = Field(description="One per input, in input order.")


def qa_records(body: QARequest) -> list[dict[str, Any]]:
    """``inputs`` (one pair or a list) -> raw records of the QA task."""
    items = [body.inputs] if isinstance(body.inputs, QAInput) else body.inputs
    return [{"question": item.question, "context": item.context} for item in items]


def qa_response(model: str, predictions: Sequence[dict[str, Any]]) -> QAResponse:
    """Map the QA task's postprocess output to the response schema (the n-best list stays internal)."""
    return QAResponse(model=model, predictions=[QAPrediction.model_validate(p) for p in predictions])


TASK = TaskSpec(
    name="qa",
    params=Params,
    model_class=AutoModelForQuestionAnswering,
    head_modules=("qa_outputs",),
    metric_names=("exact_match", "f1"),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
    input_fields=("question", "context"),
    outputs=outputs,
    loss_terms=loss_terms,
    target_keys=TARGETS,
    serve_schema=ServeSchema(QARequest, qa_records, QAResponse, qa_response),
    why_no_logits="its QA head gives separate start/end logits",
    pipeline_tag="question-answering",
)
