"""Pruning: global magnitude (unstructured) and FFN neurons (structured), then a short recovery fine-tune.

Magnitude pruning uses ``torch.nn.utils.prune.global_unstructured`` over every Linear weight outside
the task head. The pruning re-parametrisation (``weight = weight_orig * weight_mask``) stays on
during recovery so zeroed weights stay zero while the rest adapt, and ``make_permanent`` removes it
afterwards. The model keeps its shape: the saving is in compressibility, not in dense compute.

FFN-neuron pruning removes the same number of intermediate neurons from every layer (lowest
``||W_in[i, :]|| * ||W_out[:, i]||`` first, a cheap importance proxy) with transformers'
``prune_linear_layer``, so the result is a plain, smaller HF model with a smaller
``intermediate_size`` that loads as a plain Hugging Face model.

Attention heads are not offered: transformers 5 removed ``prune_heads``, and BERT-style configs derive
the head size from ``hidden_size / num_attention_heads``, so a model with fewer heads of the original
size cannot be described by a plain HF config (it would need remote code, which tunelab never runs).

Recovery runs the ordinary training loop (``tunelab.training.train``) for a few steps on the run's
own training split; it is hand-wired here only because the model comes from an artifact, not from
``prepare_inputs``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import nn
from torch.nn.utils import prune
from transformers.pytorch_utils import prune_linear_layer

from tunelab.config import RunConfig
from tunelab.errors import ExportError
from tunelab.methods import METHODS
from tunelab.training import Plan, TrainInputs, build_accelerator, train
from tunelab.training.setup import task_adapted

if TYPE_CHECKING:
    from tunelab.models.protocols import Configured

logger = logging.getLogger(__name__)

PRUNE_METHODS = ("magnitude", "neurons")


# Besides the task head, the pooler is kept: its weights are small, so a global ranking erases it first
# (MiniLM at 50% sparsity: pooler 100% zero, constant predictions), cutting every path to the head.
KEPT_MODULES = ("pooler",)


def prunable_linears(model: nn.Module, head_modules: tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """Every Linear outside the task head and the pooler (see ``KEPT_MODULES``) with a weight of its own.

    A weight tied to another parameter (an LM head sharing the input embeddings) is left alone:
    pruning re-parametrises it into a new tensor, which unties it, and ``save_pretrained`` then drops
    it as a tied copy, so the saved model would reload the unpruned embeddings in its place.
    """
    kept = {*head_modules, *KEPT_MODULES}
    owners: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        owners[id(param)] = owners.get(id(param), 0) + 1
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and kept.isdisjoint(name.split("."))
        and owners.get(id(module.weight), 0) == 1
    ]


def magnitude_prune(model: nn.Module, amount: float, head_modules: tuple[str, ...]) -> None:
    """Zero the ``amount`` fraction of smallest-magnitude Linear weights, ranked across all layers.

    Leaves the pruning re-parametrisation in place (see module docstring); call ``make_permanent``.
    """
    targets = [(module, "weight") for _, module in prunable_linears(model, head_modules)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    """Fold every pruning mask into its weight so the model saves as a plain state dict."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_orig"):
            prune.remove(module, "weight")  # type: ignore[no-untyped-call]  # unannotated in torch


def linear_sparsity(model: nn.Module, head_modules: tuple[str, ...]) -> float:
    """Fraction of exactly-zero weights over the prunable Linears."""
    weights = [module.weight for _, module in prunable_linears(model, head_modules)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(sum(w.numel() for w in weights), 1)


class _HasDense(Protocol):
    dense: nn.Linear


class _EncoderLayer(Protocol):
    """A BERT-style encoder layer: FFN input projection ``intermediate.dense``, output ``output.dense``."""

    intermediate: _HasDense
    output: _HasDense


def _encoder_layers(model: nn.Module) -> list[_EncoderLayer]:
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None or not all(
        isinstance(getattr(getattr(layer, "intermediate", None), "dense", None), nn.Linear)
        and hasattr(layer, "output")
        for layer in layers
    ):
        raise ExportError(
            f"--prune neurons: supports dense BERT-style encoders (encoder.layer[i].intermediate.dense/"
            f"output); {type(model).__name__} is not one (an MoE model's FFNs are experts). "
            "Use --prune magnitude"
        )
    return cast("list[_EncoderLayer]", list(layers))  # the structure checked above


@torch.no_grad()
def prune_ffn_neurons(model: nn.Module, amount: float) -> int:
    """Remove ``amount`` of the FFN neurons in every layer (same count each); returns the new width."""
    layers = _encoder_layers(model)
    config = cast("Configured", model).config
    width: int = config.intermediate_size
    keep = max(1, round(width * (1.0 - amount)))
    for layer in layers:
        w_in, w_out = layer.intermediate.dense.weight, layer.output.dense.weight  # (I, H), (H, I)
        importance = w_in.norm(dim=1) * w_out.norm(dim=0)  # (I,)
        index = importance.topk(keep).indices.sort().values
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, index, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, index, dim=1)
    config.intermediate_size = keep
    return keep


def recovery_config(cfg: RunConfig, steps: int, lr: float | None, output_dir: Path) -> RunConfig:
    """The run's training config cut to ``steps`` optimizer steps, no evaluation, output in ``output_dir``."""
    train_cfg = cfg.train.model_copy(
        update={
            "output_dir": output_dir,
            "max_steps": steps,
            "lr": lr if lr is not None else cfg.train.lr,
            "warmup_steps": None,
            "warmup_ratio": 0.1,
            "eval_steps": None,
            "save_steps": steps,
            "logging_steps": max(1, steps // 5),
            "early_stopping_patience": None,
        }
    )
    return cfg.model_copy(update={"train": train_cfg})


def recover(
    model: nn.Module,
    cfg: RunConfig,
    steps: int,
    lr: float | None,
    task: Any,
    task_params: Any,
    data: TrainInputs,
) -> dict[str, float]:
    """Fine-tune ``model`` in place for ``steps`` steps on ``data.train``; returns the logged losses.

    ``data.adapted`` is replaced by ``model``; the loop's checkpoints go to a temp dir that is removed.
    """
    with tempfile.TemporaryDirectory(prefix="tunelab-recovery-") as tmp:
        short = recovery_config(cfg, steps, lr, Path(tmp))
        full = METHODS.get("full")
        plan = Plan(
            cfg=short,
            task=task,
            task_params=task_params,
            methods=((full, full.params()),),
            model_dir=Path(tmp),
        )
        model.train()
        data.adapted = task_adapted(task, task_params, model)
        result = train(plan, data, build_accelerator(short.train))
    model.eval()
    logger.info("recovery fine-tune: %d steps, losses %s", result.step, result.losses)
    return {str(step): loss for step, loss in result.losses.items()}
