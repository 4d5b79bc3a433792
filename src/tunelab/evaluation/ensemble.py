"""Ensembles of saved runs at eval/predict time: average logits, average probabilities, or majority vote.

Hand-written because transformers has no model ensembling; it is a few tensor ops. The ensemble is an
``nn.Module`` whose forward returns the combined ``logits``, so every consumer of a model (evaluation,
``predict_records``, serving) takes it unchanged. Members must serve one task with the same labels,
task params and tokenizer, so their outputs line up row for row and class for class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from transformers.utils.generic import ModelOutput

from tunelab.errors import CheckpointError
from tunelab.tasks.spec import logits_output

Combine = Literal["logits", "probs", "vote"]
COMBINE: tuple[str, ...] = ("logits", "probs", "vote")


def combine_logits(stacked: torch.Tensor, how: Combine) -> torch.Tensor:
    """Members' logits ``[M, ..., C]`` -> one set of logits ``[..., C]``.

    ``logits``: their mean. ``probs``: log of the mean probability, so softmax gives the mean. ``vote``:
    log of (votes + mean probability) / (M + 1): the argmax is the majority class, ties go to the
    higher mean probability, and the result is still a proper log-distribution for the loss.
    """
    if how == "logits":
        return stacked.mean(0)
    probs = stacked.float().softmax(-1).mean(0)
    if how == "probs":
        return probs.log()
    n_members, n_classes = stacked.shape[0], stacked.shape[-1]
    votes = nn.functional.one_hot(stacked.argmax(-1), n_classes).sum(0)  # [..., C]
    return ((votes + probs) / (n_members + 1)).log()


class Ensemble(nn.Module):
    """Runs every member on the batch and returns the combined logits."""

    def __init__(self, members: Sequence[nn.Module], how: Combine) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.how = how

    def forward(self, **batch: Any) -> ModelOutput:
        """Every member on ``batch``, their fp32 logits combined as ``how`` says (``combine_logits``).

        Members share task, labels and tokenizer (``ensemble_of`` checks), so their logits line up; the
        output has a transformers model's ``logits`` field, so prediction and metrics run on it as is.
        """
        stacked = torch.stack([member(**batch).logits.float() for member in self.members])  # [M, ..., C]
        logits = combine_logits(stacked, self.how)
        return ModelOutput(logits=logits)  # type: ignore[no-untyped-call]  # __init__ unannotated in HF


def _signature(art: Any) -> dict[str, Any]:
    """What members must share for their logits to be comparable."""
    return {
        "task": art.task.name,
        "labels": list(art.labels),
        "task params": art.task_params.model_dump(mode="json"),
        "tokenizer": (type(art.tokenizer).__name__, art.tokenizer.get_vocab()),
    }


def ensemble_of(artifacts: Sequence[Any], how: Combine) -> Any:
    """One loaded artifact (the first member's metadata) whose model is the ensemble of all members.

    ``artifacts`` are ``inference.artifact.Artifact`` instances.
    """
    if how not in COMBINE:
        raise CheckpointError(f"--combine: {how!r} is not supported; choose one of: {', '.join(COMBINE)}")
    if artifacts[0].task.outputs is not logits_output:
        raise CheckpointError(
            f"ensemble: task {artifacts[0].task.name!r} has no single logits output to combine; "
            "ensembles serve classification-style tasks"
        )
    first = _signature(artifacts[0])
    for art in artifacts[1:]:
        other = _signature(art)
        differ = [key for key in first if first[key] != other[key]]
        if differ:
            raise CheckpointError(
                f"ensemble: {art.path} differs from {artifacts[0].path} in {', '.join(differ)}; "
                "ensemble only runs trained for the same task, labels and tokenizer"
            )
    model = Ensemble([art.model for art in artifacts], how).eval()
    return dataclasses.replace(artifacts[0], model=model)
