"""DeepSeekMoE as a method: dense -> MoE upcycling, balance losses, aux-free bias, router health, ESFT.

Implements the project MoE specification, ../shared/MOE.md (DeepSeekMoE arXiv 2401.06066, V2
2405.04434, V3 2412.19437). Hand-written because no library builds DeepSeekMoE layers for encoders
or trains the V3 routing bias. Modules:
``router`` (scores, top-K, groups, bias), ``layer`` (MoE FFN, vectorised dispatch, capacity),
``balance`` (losses, bias rule), ``upcycle`` (BERT/Llama FFN -> MoE), ``hooks`` (training step and
optimizer-step hook), ``stats`` (router health and heatmap).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.methods.moe import hooks, stats
from tunelab.methods.moe.params import Params
from tunelab.methods.moe.upcycle import upcycle
from tunelab.methods.spec import IMAGE_CLASSES, SEQ2SEQ_CLASS, Adapted, MethodSpec, Target, refuses_block_mask

__all__ = ["SPEC", "Params", "upcycle"]


def _router_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.endswith("router.weight")]


def apply(model: nn.Module, params: Params, head_modules: tuple[str, ...]) -> Adapted:
    """Upcycle the dense FFNs into MoE layers; the router trains at ``router_lr_scale`` x lr or is frozen."""
    model = upcycle(model, params)
    routers = _router_names(model)
    for name in routers:
        model.get_parameter(name).requires_grad_(params.router_trainable)
    return Adapted(model=model, lr_scale=dict.fromkeys(routers, params.router_lr_scale))


def rebuild(model: nn.Module, params: Params) -> nn.Module:
    """The MoE structure on a freshly built dense model, so a saved MoE state dict loads strictly."""
    return upcycle(model, params, perturb=False)


def refuses(params: Params, target: Target) -> str | None:
    """What upcycling cannot serve: encoder-decoders, and batches without a 2D padding mask.

    It knows BERT-family and Llama-family FFNs (T5 and ViT have neither); the balance statistics count the
    tokens of a 2D padding mask.
    """
    if target.model_class == SEQ2SEQ_CLASS:
        return "upcycling supports BERT-family and Llama-family FFNs, not encoder-decoders such as T5"
    if target.model_class in IMAGE_CLASSES:
        return "upcycling supports BERT-family and Llama-family FFNs, not vision transformers' MLP blocks"
    return refuses_block_mask("counts routed tokens through a 2D padding mask", target)


def report(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], model_dir: Path
) -> dict[str, Any]:
    """Router health of the best model on dev (loads, max/mean, dead, entropy) + load heatmap PNG."""
    health = stats.router_report(model, batches)
    stats.plot_load_heatmap(health, model_dir / "expert_load_dev.png")
    return {"router_dev": health}


SPEC = MethodSpec(
    name="moe",
    refuses=refuses,
    params=Params,
    apply=apply,
    step=hooks.step,
    on_optimizer_step=hooks.on_optimizer_step,
    rebuild=rebuild,
    report=report,
)
