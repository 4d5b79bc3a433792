"""``tunelab label suggest``: the pool rows a saved run would learn most from, pre-annotated by it.

Model-assisted annotation: the pool is read with the run's own task reader (the training text columns;
a label column is ignored), rows the run read as labelled data (its train, dev and test splits) are
left out, the rest are predicted through
``inference.predict.predict_records`` (the one prediction path) and ranked by an
``evaluation.active`` strategy. Each suggested row keeps its original columns and gains ``score`` (the
strategy's, higher first) and ``predicted_label`` (the model's label, for the annotator to confirm or fix).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from tunelab.data import Columns
from tunelab.data.readers import read_table
from tunelab.errors import CheckpointError, ConfigError, DataError, TunelabError
from tunelab.evaluation.active import STRATEGIES, Strategy, coreset_picks, uncertainty_picks
from tunelab.inference.artifact import Artifact
from tunelab.inference.predict import predict_records
from tunelab.io import atomic_write
from tunelab.models.architectures import mean_pool
from tunelab.tasks.spec import Predicted, has_column

logger = logging.getLogger(__name__)

SCORE, PREDICTED = "score", "predicted_label"  # columns added to each suggested row (replaced if present)
EMBEDDING = "embedding"  # the sentence-embedding output the coreset strategy adds to a prediction
OUT_SUFFIXES = (".csv", ".jsonl")
SPLIT_FILES = ("train_file", "dev_file", "test_file")


def check_out(out: Path | None) -> None:
    """Refuse an output file whose type is not written here, before any model work."""
    if out is not None and out.suffix.lower() not in OUT_SUFFIXES:
        raise ConfigError(
            f"--out: {out.name} is not one of {', '.join(OUT_SUFFIXES)}; the suffix picks the format"
        )


def run_data(art: Artifact) -> Any:
    """The run's splits as it read them (``data.TaskData``): its recorded files, split with its seed."""
    info = art.info
    if info.config is None:
        raise CheckpointError(
            f"{art.path}: no run config in tunelab_run.json; label suggest needs a run trained by tunelab "
            "(its labelled rows are left out of the pool)"
        )
    recorded = {  # absolute paths: the run may have named its files relative to another directory
        name: Path(info.data_files[f"data.{name}"].path)
        for name in SPLIT_FILES
        if f"data.{name}" in info.data_files
    }
    data = info.config.data.model_copy(update=recorded)
    return art.task.load_data(data, art.task_params, info.config.train.seed)


def _keys(examples: Any) -> list[tuple[str, str | None]]:
    """(text, text_pair) of each example: what makes a pool row the same input as a training row."""
    pairs = list(examples["text_pair"]) if has_column(examples, "text_pair") else [None] * len(examples)
    return list(zip(list(examples["text"]), pairs, strict=True))


def _records(art: Artifact, examples: Any, rows: Sequence[int]) -> list[dict[str, Any]]:
    """Prediction records (the task's input fields) of ``rows`` of ``examples``."""
    columns = {name: list(examples[name]) for name in art.task.input_fields}
    return [{name: values[i] for name, values in columns.items()} for i in rows]


def embedding_predictor(art: Artifact) -> Artifact:
    """``art`` whose predictions also carry the mean-pooled last hidden state as ``embedding``.

    The task's own collator, outputs and postprocess, each extended by one step, so the embeddings come
    from the same batched forward as the predictions (``predict_records``), rows in input order.
    """
    task = art.task

    def collator(tokenizer: Any, params: Any) -> Any:
        collate = task.collator(tokenizer, params)
        return lambda rows: {**collate(rows), "output_hidden_states": True}

    def outputs(out: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = getattr(out, "hidden_states", None)
        if hidden is None:
            raise TunelabError(
                f"{art.path}: the model returns no hidden states; use --strategy entropy or margin"
            )
        return {**task.outputs(out, batch), EMBEDDING: mean_pool(hidden[-1], batch["attention_mask"])}

    def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
        out, vectors = task.postprocess(predicted), predicted.arrays[EMBEDDING]
        if len(vectors) != len(out):
            raise TunelabError(
                f"task {task.name} splits inputs into several features; coreset cannot embed them"
            )
        return [{**p, EMBEDDING: v} for p, v in zip(out, vectors, strict=True)]

    variant = dataclasses.replace(task, collator=collator, outputs=outputs, postprocess=postprocess)
    return dataclasses.replace(art, task=variant)


def _probabilities(
    predictions: Sequence[Mapping[str, Any]], labels: Sequence[str], strategy: str
) -> np.ndarray:
    """(N, C) label probabilities of the predictions; refused unless each row is one distribution."""
    probs = np.asarray([[p["probabilities"][name] for name in labels] for p in predictions])
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise TunelabError(
            f"--strategy {strategy}: the model's label probabilities do not sum to 1 (a multi-label model); "
            "use --strategy coreset"
        )
    return probs


def _embeddings(predictions: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    return torch.from_numpy(np.stack([p[EMBEDDING] for p in predictions]))


def suggest(art: Artifact, pool: Path, k: int, strategy: str, batch_size: int = 64) -> list[dict[str, Any]]:
    """The ``k`` pool rows ``strategy`` ranks first (all when fewer are left), best first, pre-annotated.

    Raises:
        ConfigError: an unknown strategy.
        DataError: a bad pool row (``file:line``, every one at once), or no row left once the run's
            labelled rows are left out.
        TunelabError: a run whose task has no one label per row, or whose outputs the strategy cannot use.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if not art.task.few_shot:
        raise TunelabError(f"{art.path}: task {art.task.name} has no one label per row to suggest rows for")
    columns = Columns(text=art.columns.text, label=None, text_pair=art.columns.text_pair)
    examples = art.task.read_eval(pool, columns, art.task_params, art.labels)  # file:line errors
    table = read_table(pool)  # the same rows, every original column
    data = run_data(art)
    labelled = {
        key for split in (data.train, data.dev, data.test) if split is not None for key in _keys(split)
    }
    keep = [i for i, key in enumerate(_keys(examples)) if key not in labelled]
    if not keep:
        raise DataError(
            f"{pool}: all {len(examples)} rows are in the run's labelled data; nothing to suggest"
        )
    if k > len(keep):
        logger.warning(
            "--k %d is more than the %d pool rows left; suggesting all of them, ranked", k, len(keep)
        )
    logger.info(
        "pool %s: %d rows, %d in the run's labelled data left out",
        pool,
        len(examples),
        len(examples) - len(keep),
    )
    records = _records(art, examples, keep)
    if strategy == "coreset":
        embedded = embedding_predictor(art)
        predictions = predict_records(embedded, records, batch_size)
        trained = predict_records(embedded, _records(art, data.train, range(len(data.train))), batch_size)
        picks, scores = coreset_picks(_embeddings(predictions), _embeddings(trained), k)
    else:
        predictions = predict_records(art, records, batch_size)
        probs = _probabilities(predictions, art.labels, strategy)
        picks, scores = uncertainty_picks(cast(Strategy, strategy), probs, k)
    return [
        {
            **{name: values[keep[i]] for name, values in table.columns.items()},
            SCORE: float(score),
            PREDICTED: predictions[i]["label"],
        }
        for i, score in zip(picks.tolist(), scores.tolist(), strict=True)
    ]


def write_suggestions(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """``rows`` as CSV (header = their columns) or JSONL, by ``out``'s suffix, written atomically."""
    check_out(out)
    if out.suffix.lower() == ".jsonl":
        atomic_write(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(name for row in rows for name in row)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out, buffer.getvalue())
