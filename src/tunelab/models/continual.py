"""Continual learning's model side: the previous run's saved model, its label head grown to new labels.

A continual run (``model.previous_run``) learns task B starting from run A's ``best/``. Its labels are
A's followed by B's new ones, so the head is A's head grown: A's rows copied, the new rows freshly
initialised (transformers' own init of a resized head). The grown model therefore gives A's exact
logits on A's label columns before B trains, and "accuracy on A" later reads those columns only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import CheckpointError, ConfigError
from tunelab.models.load import load_pretrained, load_saved
from tunelab.models.run_info import RunInfo, read_run_info

BEST = "best"


def previous_model_dir(run: Path) -> Path:
    """``run/best``, a full model saved by a tunelab run and kept inside ``run`` (no symlink out)."""
    run = run.expanduser()
    best = run / BEST
    if not run.is_dir():
        raise CheckpointError(f"{run}: run directory not found; train the previous task there first")
    if not best.resolve().is_relative_to(run.resolve()):
        raise CheckpointError(f"{best}: leads outside the run directory {run}; give the run that holds it")
    if (best / "adapter_config.json").is_file():
        raise CheckpointError(
            f"{best}: an adapter artifact; a continual run grows a full model's head, so train the "
            "previous task with full or freeze"
        )
    if not (best / "config.json").is_file():
        raise CheckpointError(f"{run}: no best/config.json; the previous run has not saved a model yet")
    return best


def previous_record(run: Path) -> RunInfo:
    """The run record of ``run``'s best model (task, labels, config: what a continual run reads of A)."""
    best = previous_model_dir(run)
    info = read_run_info(best)
    if info is None or info.config is None:
        raise CheckpointError(f"{best}: no tunelab_run.json with the run config; it was not saved by a run")
    return info


def continued_labels(previous: Sequence[str], current: Sequence[str], explicit: bool) -> list[str]:
    """The continual run's labels: the previous run's, then this run's labels it did not have.

    ``explicit`` (``task.params.labels`` given) must already be that order: a label's id is its column
    in the grown head, and the previous task's columns come first.
    """
    labels = [*previous, *(name for name in current if name not in previous)]
    if explicit and list(current) != labels:
        raise ConfigError(
            f"task.params.labels: a continual run's labels start with the previous run's {list(previous)} "
            f"in that order; use {labels} or leave task.params.labels unset"
        )
    return labels


def load_grown(model_class: Any, path: Path, labels: Sequence[str], **config: Any) -> torch.nn.Module:
    """The model saved in ``path`` with its label head grown to ``labels`` (its own labels first).

    transformers loads the backbone and re-initialises every tensor whose shape changed (the head's
    label rows, ``ignore_mismatched_sizes``); the saved rows are then copied back, so the first
    ``n_saved`` logits equal the saved model's. A tensor that changed in another way than its label
    count is refused (it would not be the previous model any more).
    """
    saved = load_saved(model_class, path).state_dict()
    model: torch.nn.Module = load_pretrained(
        model_class, path, labels, ignore_mismatched_sizes=True, **config
    )
    with torch.no_grad():
        for key, new in model.state_dict().items():
            old = saved[key]
            if old.shape == new.shape:
                continue
            if old.shape[1:] != new.shape[1:] or old.shape[0] > new.shape[0]:
                raise CheckpointError(
                    f"{path}: {key} has shape {tuple(old.shape)}, the grown model {tuple(new.shape)}; only a "
                    "label head's rows can grow"
                )
            new[: old.shape[0]] = old
    model.train()
    return model
