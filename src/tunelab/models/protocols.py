"""Typed views of the transformers model API that tunelab calls on models it holds as ``nn.Module``.

torch annotates ``nn.Module.__getattr__`` as returning ``Tensor | Module``, so ``model.config`` or
``model.save_pretrained(...)`` on a value typed ``nn.Module`` does not type-check, although every model
tunelab loads is a transformers ``PreTrainedModel`` or a peft ``PeftModel`` wrapping one (peft forwards
these attributes to its base). Code keeps passing ``nn.Module`` around (what accelerate, the training
loop and the methods handle) and ``cast``s to one of these Protocols where it uses that API: the cast
states the assumption in one place and costs nothing at run time. Import them under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import torch
from torch import nn
from transformers import GenerationConfig, PretrainedConfig


class Configured(Protocol):
    """A model carrying its transformers config (``PreTrainedModel.config``)."""

    config: PretrainedConfig


class HasBaseModel(Protocol):
    """A model with a task head around a bare backbone (``PreTrainedModel.base_model``)."""

    @property
    def base_model(self) -> nn.Module:
        """The backbone without the task head (e.g. the ``BertModel`` inside a classifier)."""
        ...


class SavesPretrained(Protocol):
    """A model that writes itself as a Hugging Face directory (``PreTrainedModel``, ``PeftModel``)."""

    def save_pretrained(self, save_directory: str | os.PathLike[str], /, **kwargs: Any) -> Any:
        """Write config (or adapter config) and safetensors weights into ``save_directory``."""
        ...


class TiesWeights(Protocol):
    """A model whose tied parameters (e.g. an MLM decoder and the embeddings) can be re-tied."""

    def tie_weights(self) -> Any:
        """Make tied parameters share storage again (after a state dict was loaded into them)."""
        ...


class Generates(Protocol):
    """A model with transformers' ``generate`` (``GenerationMixin``, or a peft model around one)."""

    generation_config: GenerationConfig

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """Decode token ids.

        Returns (B, L) ids: tunelab never asks for ``return_dict_in_generate``, the only case in which
        transformers returns an output object instead.
        """
        ...


class SwitchesAttention(Protocol):
    """A model that can change its attention kernel after loading (``PreTrainedModel``)."""

    config: PretrainedConfig

    def set_attn_implementation(self, attn_implementation: str, /) -> None:
        """Use ``attn_implementation`` (eager, sdpa...) from the next forward on."""
        ...
