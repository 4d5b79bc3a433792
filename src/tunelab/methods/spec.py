"""MethodSpec: how an adaptation method changes the model and, at most, one micro-step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

Backward = Callable[[torch.Tensor], None]


@dataclass
class Adapted:
    """The trainable model plus frozen companions a method needs (e.g. a distillation teacher)."""

    model: nn.Module
    companions: dict[str, nn.Module] = field(default_factory=dict)


@dataclass(frozen=True)
class StepOutput:
    """Loss of one micro-batch (already back-propagated) and extra scalars to log."""

    loss: torch.Tensor
    metrics: Mapping[str, float] = field(default_factory=dict)


def default_step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """Plain supervised step: the model's own loss, one backward."""
    loss = adapted.model(**batch).loss
    backward(loss)
    return StepOutput(loss=loss.detach())


@dataclass(frozen=True)
class MethodSpec:
    """An adaptation method as plain functions.

    ``apply(model, params, head_modules)`` returns the Adapted model; ``step`` owns one micro-batch's
    forward and backward (the loop owns accumulation, clipping and optimizer steps).
    """

    name: str
    params: type[BaseModel]
    apply: Callable[[nn.Module, Any, tuple[str, ...]], Adapted]
    step: Callable[[Adapted, Mapping[str, torch.Tensor], Backward], StepOutput] = default_step
