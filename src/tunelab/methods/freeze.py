"""Partial fine-tuning: freeze parts of the backbone, decay learning rates by depth, train the head first.

Options combine in one method: ``trainable_layers`` (head-only = 0, top-k = k), ``freeze_embeddings``,
``frozen_modules`` (globs over parameter names), ``layer_lr_decay`` (Howard & Ruder 2018, ULMFiT's
discriminative rates; Clark et al. 2020, ELECTRA: layer i of L learns at ``lr * decay**(L - i)``,
embeddings at ``lr * decay**(L + 1)``) and ``head_first_steps`` (the head trains alone for N optimizer
steps, then everything trainable joins; ULMFiT's gradual unfreezing in two stages).

Hand-written because transformers and peft have no such selection: it is name matching over
``named_parameters``. Frozen parameters get ``requires_grad=False`` and never enter the optimizer. The
head-first stage is a zero learning rate (``Adapted.lr_start``) rather than a requires_grad flip, so a
resumed run repeats it exactly from the checkpointed scheduler; the backbone's gradients are still
computed in that stage and count in gradient clipping.
"""

from __future__ import annotations

import fnmatch
import re

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.spec import Adapted, MethodSpec

# Transformer blocks are numbered children of a list: bert "layer.3.", llama "layers.3.", gpt2 "h.3.".
LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


class Params(BaseModel):
    """Which backbone parameters train, and at which learning rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trainable_layers: int | None = Field(
        None,
        ge=0,
        description=(
            "Train only the top k transformer layers (and the head); 0 trains the head alone; None "
            "trains every layer. Embeddings are frozen whenever some layer is; other backbone "
            "parameters (pooler, final norm) train when k > 0."
        ),
    )
    freeze_embeddings: bool = Field(False, description="Freeze the embedding parameters.")
    frozen_modules: list[str] = Field(
        default_factory=list,
        description="Globs over parameter names to freeze (head included), e.g. 'bert.encoder.layer.0.*'.",
    )
    layer_lr_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="Layer-wise LR decay: layer i of L learns at lr * decay**(L - i)."
    )
    head_first_steps: int = Field(
        0, ge=0, description="Optimizer steps in which only the head learns, before the rest joins."
    )


def layer_index(name: str) -> int | None:
    """Index of the transformer layer a parameter belongs to, or None outside the layer stack."""
    found = LAYER.search(name)
    return int(found.group(1)) if found else None


def in_head(name: str, head_modules: tuple[str, ...]) -> bool:
    """True for parameters of a task head module (matched by a dotted name component)."""
    return not set(head_modules).isdisjoint(name.split("."))


def _frozen(name: str, params: Params, n_layers: int, head: bool) -> bool:
    """Globs first (they may name the head), then the head trains, then the layer/embedding options."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in params.frozen_modules):
        return True
    if head:
        return False
    index = layer_index(name)
    k = params.trainable_layers
    if index is not None:
        return k is not None and index < n_layers - k
    if "embed" in name:
        return params.freeze_embeddings or (k is not None and k < n_layers)
    return k == 0


def _lr_scale(name: str, decay: float, n_layers: int) -> float:
    """Backbone parameter's multiplier: decay**(L - i) in layer i, decay**(L + 1) for embeddings."""
    index = layer_index(name)
    if index is not None:
        return decay ** (n_layers - index)
    return decay ** (n_layers + 1) if "embed" in name else 1.0


def apply(model: nn.Module, params: Params, head_modules: tuple[str, ...]) -> Adapted:
    """Set requires_grad by the options; return the LR scales and head-first starts for the optimizer."""
    names = [name for name, _ in model.named_parameters()]
    indices = {i for i in map(layer_index, names) if i is not None}
    needs_layers = params.trainable_layers is not None or params.layer_lr_decay != 1.0
    if needs_layers and not indices:
        raise ConfigError(
            "methods.freeze: no numbered transformer layers found in this model's parameters "
            f"(looked for {LAYER.pattern}); use frozen_modules instead of trainable_layers/layer_lr_decay"
        )
    n_layers = max(indices, default=-1) + 1
    if params.trainable_layers is not None and params.trainable_layers > n_layers:
        raise ConfigError(
            f"methods.freeze.trainable_layers: {params.trainable_layers} exceeds the model's "
            f"{n_layers} layers"
        )
    scale, start = {}, {}
    for name, p in model.named_parameters():
        head = in_head(name, head_modules)
        p.requires_grad_(not _frozen(name, params, n_layers, head))
        if p.requires_grad and not head:
            if params.layer_lr_decay != 1.0:
                scale[name] = _lr_scale(name, params.layer_lr_decay, n_layers)
            if params.head_first_steps:
                start[name] = params.head_first_steps
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("methods.freeze: these options freeze every parameter; nothing would train")
    return Adapted(model=model, lr_scale=scale, lr_start=start)


SPEC = MethodSpec(name="freeze", params=Params, apply=apply, group="trainable")
