"""LoRA/adapter artifacts (writer and reader together) and a verified merge into a plain model.

An adapter artifact is what a PEFT run saves: peft's ``adapter_config.json`` +
``adapter_model.safetensors`` (the task head travels in ``modules_to_save``), the tokenizer, and
``tunelab_run.json`` whose ``adapter.base_model`` names the base (a shipped asset name or a local
directory). It has no ``config.json``: the base model supplies the architecture. ``peft`` is imported
here (and in ``methods/peft.py``) only.

Merging uses peft's ``merge_and_unload``; what tunelab adds is the refusal: merged logits must equal
the adapter-on logits on a probe batch within a dtype-dependent tolerance, or nothing is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from tunelab.assets import resolve_model
from tunelab.errors import CheckpointError, ExportError
from tunelab.export.artifact import ADAPTER_CONFIG, save_artifact
from tunelab.tasks.spec import TaskSpec, load_with_labels

logger = logging.getLogger(__name__)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Max |merged - unmerged| logit difference accepted per target dtype: fp32 only sees summation-order
# noise; half precisions lose ~3 (fp16) or ~2 (bf16) significant digits in every weight.
MERGE_ATOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


def is_adapter_dir(path: Path) -> bool:
    """True for an adapter artifact (peft layout) rather than a full model directory."""
    return (path / ADAPTER_CONFIG).is_file()


def save_adapter(
    model: PeftModel, tokenizer: Any, dest: Path, info: Mapping[str, Any], base_model: str
) -> None:
    """Write an adapter artifact atomically; ``base_model`` is what the reader loads under it."""
    if not isinstance(model, PeftModel):
        raise ExportError(f"save_adapter needs a peft model, got {type(model).__name__}")
    save_artifact(model, tokenizer, dest, {**info, "adapter": {"base_model": base_model}})


def save_run_model(model: torch.nn.Module, tokenizer: Any, dest: Path, info: Mapping[str, Any]) -> None:
    """A training run's model: an adapter artifact over the run's base model for a peft model, else a
    full model directory (``info["config"]`` is the run's config)."""
    if isinstance(model, PeftModel):
        save_adapter(model, tokenizer, dest, info, base_model=info["config"]["model"]["name_or_path"])
    else:
        save_artifact(model, tokenizer, dest, info)


def load_adapter_model(path: Path, info: Mapping[str, Any], task: TaskSpec) -> PeftModel:
    """Base model (fresh head sized for the labels) + the saved adapter and head, adapter on, fp32."""
    base_name = (info.get("adapter") or {}).get("base_model")
    if not base_name:
        raise CheckpointError(f"{path}: adapter artifact without adapter.base_model in tunelab_run.json")
    # The head is "newly initialized" here until the adapter's saved copy loads over it.
    base, loading = load_with_labels(
        task,
        resolve_model(base_name),
        info["labels"],
        task.params.model_validate(info.get("task_params") or {}),
        trust_remote_code=False,
        output_loading_info=True,
    )
    saved = set(json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("modules_to_save") or ())
    uncovered = [key for key in loading["missing_keys"] if saved.isdisjoint(key.split("."))]
    if uncovered:
        # Freshly initialised base weights that the adapter does not carry differ on every load.
        raise CheckpointError(
            f"{path}: base model {base_name} has no weights for {uncovered[:4]} and the adapter does not "
            "save them; train the adapter with those modules in modules_to_save"
        )
    return PeftModel.from_pretrained(base, path, is_trainable=False)


@torch.no_grad()
def merge_verified(
    model: torch.nn.Module, probe: Mapping[str, torch.Tensor], dtype: str
) -> tuple[Any, float]:
    """Merge the adapter into the base weights in ``dtype``; refuse unless logits match on ``probe``.

    Returns the merged plain transformers model and the max absolute logit difference. The adapter-on
    logits are taken in fp32 before merging, since ``merge_and_unload`` mutates the base in place.
    """
    if not isinstance(model, PeftModel):
        raise ExportError(f"--merge: a {type(model).__name__} has no adapter to merge")
    model.eval()
    reference = model(**probe).logits.float()
    merged = model.merge_and_unload().to(DTYPES[dtype]).eval()
    diff = float((merged(**probe).logits.float() - reference).abs().max())
    if not diff <= MERGE_ATOL[dtype]:
        raise ExportError(
            f"--merge: merged model differs from the adapter model by {diff:.3g} in probe logits "
            f"(tolerance {MERGE_ATOL[dtype]:g} for {dtype}); nothing written. Try --dtype float32"
        )
    logger.info("merged adapter into %s base; max logit difference %.3g", dtype, diff)
    return merged, diff
