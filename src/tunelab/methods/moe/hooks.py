"""The MoE training step (task loss + balance losses, one backward) and the optimizer-step hook.

The hook is where the aux-loss-free bias moves: token counts accumulated over every micro-batch of the
step are summed over ranks (the global batch), then ``b += γ·sign(c̄ − c)`` ([V3] §2.1.2), with γ = 0
for the final ``bias_freeze_fraction`` of steps. The same global counts give the router health
metrics, and (once) the ESFT expert selection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch

from tunelab.methods.moe.balance import (
    bias_update,
    device_balance_loss,
    expert_balance_loss,
    sequence_balance_loss,
)
from tunelab.methods.moe.layer import MoEFeedForward, moe_layers
from tunelab.methods.moe.params import Params
from tunelab.methods.moe.stats import layer_counts, load_stats, routing_entropy
from tunelab.methods.spec import Adapted, Backward, OptimizerStepContext, StepOutput


def balance_loss(layer: MoEFeedForward, mask: torch.Tensor) -> torch.Tensor:
    """Sum of the enabled balance losses for the layer's last forward (α1, α2, V3 sequence-wise α)."""
    p, r = layer.params, layer.last_routing
    assert r is not None
    loss = r.scores.new_zeros(())
    if p.aux_loss_alpha:
        loss = loss + expert_balance_loss(r.scores, r.indices, mask, p.aux_loss_alpha)
    if p.device_loss_alpha:
        loss = loss + device_balance_loss(r.scores, r.indices, mask, p.n_devices, p.device_loss_alpha)
    if p.seq_aux_alpha:
        loss = loss + sequence_balance_loss(r.scores, r.indices, mask, p.seq_aux_alpha)
    return loss


@torch.no_grad()
def _accumulate_counts(layer: MoEFeedForward, mask: torch.Tensor) -> None:
    r = layer.last_routing
    assert r is not None
    layer.step_counts += layer_counts(layer, mask)
    gates = torch.zeros_like(r.scores).scatter_(-1, r.indices, r.weights.to(r.scores.dtype))
    layer.step_gates += (gates * mask.unsqueeze(-1)).sum((0, 1))


def _esft_scoring(layers: list[MoEFeedForward]) -> bool:
    """True while ESFT is still scoring experts (no selection made yet): nothing may train then."""
    return any(layer.params.esft_top_p is not None and not layer.esft_selected for layer in layers)


def _apply_esft_selection(layers: list[MoEFeedForward]) -> None:
    """Unselected experts get no gradient (also right after a resume, which re-enables every expert)."""
    for layer in layers:
        if layer.esft_selected:
            for expert, kept in zip(layer.experts, layer.esft_keep.tolist(), strict=True):
                expert.requires_grad_(kept)


def step(adapted: Adapted, batch: Mapping[str, torch.Tensor], backward: Backward) -> StepOutput:
    """Forward, task loss + every MoE layer's balance losses, one backward; returns routing metrics.

    While ESFT scores experts the forward runs without gradients and nothing is back-propagated, so
    the scores come from the model as it was before fine-tuning, as in ESFT.
    """
    layers = moe_layers(adapted.model)
    scoring = _esft_scoring(layers)
    _apply_esft_selection(layers)
    with torch.no_grad() if scoring else contextlib.nullcontext():
        out = adapted.model(**batch)
    task_loss = adapted.loss(out, batch)
    mask = batch["attention_mask"].bool()
    aux = task_loss.new_zeros(())
    metrics: dict[str, float | torch.Tensor] = {}
    dropped = assignments = 0
    for i, layer in enumerate(layers):
        aux = aux + balance_loss(layer, mask)
        _accumulate_counts(layer, mask)
        assert layer.last_routing is not None
        metrics[f"moe/layer{i}_entropy"] = routing_entropy(layer.last_routing, mask)
        dropped += layer.last_dropped
        assignments += layer.last_routing.indices.numel()
    if not scoring:
        backward(task_loss + aux)
    metrics["moe/aux_loss"] = aux.detach()
    metrics["moe/dropped_frac"] = dropped / max(assignments, 1)
    return StepOutput(loss=task_loss.detach(), metrics=metrics)


def esft_selection(gate_share: torch.Tensor, top_p: float) -> torch.Tensor:
    """ESFT gate-score rule: best experts until their cumulative share reaches ``top_p``; (N,) bool."""
    share = gate_share / gate_share.sum().clamp(min=1e-20)
    values, order = share.sort(descending=True)
    keep_sorted = (values.cumsum(0) - values) < top_p  # include the expert that crosses p
    keep = torch.zeros_like(share, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    return keep


@torch.no_grad()
def on_optimizer_step(adapted: Adapted, params: Params, ctx: OptimizerStepContext) -> dict[str, float]:
    """Aux-free bias update over the global batch, ESFT selection once, router health; resets counters."""
    layers = moe_layers(adapted.model)
    scoring = _esft_scoring(layers)  # ESFT scores the model as it was: the bias holds still too
    active = ctx.step <= (1.0 - params.bias_freeze_fraction) * ctx.total_steps and not scoring
    gamma = params.bias_update_speed if active else 0.0
    esft_now = scoring and ctx.step >= params.esft_score_steps
    metrics: dict[str, float] = {"moe/bias_update_speed": gamma}
    ratios, dead = [], 0.0
    for i, layer in enumerate(layers):
        counts = ctx.all_reduce_sum(layer.step_counts.clone())
        if gamma:
            layer.router.bias.copy_(bias_update(layer.router.bias, counts, gamma))
        stats = load_stats(counts)
        ratios.append(stats["max_mean_load"])
        dead += stats["dead_experts"]
        metrics[f"moe/layer{i}_max_mean_load"] = stats["max_mean_load"]
        metrics[f"moe/layer{i}_bias_norm"] = float(layer.router.bias.norm())
        if esft_now:
            assert params.esft_top_p is not None  # esft_now implies ESFT scoring, i.e. esft_top_p is set
            keep = esft_selection(ctx.all_reduce_sum(layer.step_gates.clone()), params.esft_top_p)
            layer.esft_keep.copy_(keep)
            layer.esft_selected.fill_(True)
        if layer.esft_selected:
            metrics[f"moe/layer{i}_esft_trainable"] = float(layer.esft_keep.sum())
        layer.step_counts.zero_()
        if not _esft_scoring([layer]):
            layer.step_gates.zero_()
    metrics["moe/max_mean_load"] = max(ratios, default=0.0)
    metrics["moe/dead_experts"] = dead
    return metrics
