"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from torch import nn

from tunelab.methods.spec import Adapted, MethodSpec


class Params(BaseModel):
    """Options of full fine-tuning: none (``methods[i].params`` must be empty); every parameter trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def apply(model: nn.Module, params: Params, head_modules: tuple[str, ...]) -> Adapted:
    """Mark all parameters trainable (a loaded checkpoint may carry frozen flags)."""
    model.requires_grad_(True)
    return Adapted(model=model)


SPEC = MethodSpec(name="full", params=Params, apply=apply, group="trainable")
