"""Adapter artifacts (peft layout): recognise them, and load one over its base model.

An adapter artifact is what a PEFT run saves: peft's ``adapter_config.json`` +
``adapter_model.safetensors`` (the task head travels in ``modules_to_save``), the tokenizer, and
``tunelab_run.json`` whose ``adapter.base_model`` names the base (a shipped asset name or a local
directory). It has no ``config.json``: the base model supplies the architecture. The writer is
``models.artifact.save_model`` (peft's ``save_pretrained`` writes this layout for a peft model).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeGuard

from peft import PeftModel, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from torch import nn

from tunelab.errors import CheckpointError
from tunelab.models.load import load_pretrained, resolve_model
from tunelab.models.run_info import RunInfo

ADAPTER_CONFIG = "adapter_config.json"  # peft's file: marks an adapter artifact
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's weights file (adapter and modules_to_save)


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft's ``PeftModel`` construction (``get_peft_model``, ``PeftModel.from_pretrained``).

    peft 0.21.2's ``PeftModel.__init__`` reads ``model.is_gradient_checkpointing``, which transformers 5
    deprecated for ``is_activation_checkpointing``: a FutureWarning on every adapter wrap or load that
    tunelab cannot act on. Only that warning is hidden; drop this once peft reads the new name.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def is_adapter_dir(path: Path) -> bool:
    """True for an adapter artifact (peft layout) rather than a full model directory."""
    return (path / ADAPTER_CONFIG).is_file()


def is_peft_model(model: nn.Module) -> TypeGuard[PeftModel]:
    """True for a model wrapped by peft (saved as an adapter artifact, merged on export)."""
    return isinstance(model, PeftModel)


def lora_dropout_widths(module: nn.Module) -> list[int]:
    """Input width of every active LoRA branch inside ``module`` whose dropout is on (p > 0).

    Such a branch keeps a dropout mask as wide as its input (memory estimates count it).
    """
    return [
        layer.in_features
        for layer in module.modules()
        if isinstance(layer, LoraLayer) and layer.in_features is not None  # set once peft built it
        for name in layer.active_adapters
        if isinstance(drop := layer.lora_dropout[name], nn.Dropout) and drop.p > 0
    ]


def load_adapter_model(
    path: Path, info: RunInfo, model_class: Any, labels: Sequence[str], config: dict[str, Any]
) -> PeftModel:
    """Base model (fresh head sized for ``labels``) + the saved adapter and head, adapter on, fp32.

    ``config`` holds the task's config overrides for the base (``TaskSpec.model_config``).
    """
    if info.adapter is None:
        raise CheckpointError(f"{path}: adapter artifact without adapter.base_model in tunelab_run.json")
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise CheckpointError(f"{path}: adapter artifact without {ADAPTER_WEIGHTS}; re-train or re-save it")
    base_name = info.adapter.base_model
    # The head is "newly initialized" here until the adapter's saved copy loads over it.
    base, loading = load_pretrained(
        model_class, resolve_model(base_name), labels, output_loading_info=True, **config
    )
    saved = set(json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("modules_to_save") or ())
    uncovered = [key for key in loading["missing_keys"] if saved.isdisjoint(key.split("."))]
    if uncovered:
        # Freshly initialised base weights that the adapter does not carry differ on every load.
        raise CheckpointError(
            f"{path}: base model {base_name} has no weights for {uncovered[:4]} and the adapter does not "
            "save them; train the adapter with those modules in modules_to_save"
        )
    with peft_wrapping():
        model = PeftModel.from_pretrained(base, path, is_trainable=False)
    # peft only warns about adapter tensors the model expects but the file lacks (they stay at their
    # init) and ignores tensors it has no place for; either means this is not the adapter it claims.
    with safe_open(str(path / ADAPTER_WEIGHTS), framework="pt") as stored:
        saved_keys = set(stored.keys())
    expected = set(get_peft_model_state_dict(model))
    if saved_keys != expected:
        raise CheckpointError(
            f"{path}: adapter weights do not match its adapter_config.json over {base_name} (missing "
            f"{sorted(expected - saved_keys)[:4]}, unexpected {sorted(saved_keys - expected)[:4]}); "
            "re-train or re-save the adapter"
        )
    return model
