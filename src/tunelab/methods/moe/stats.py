"""Router health: per-layer expert load, max/mean load, dead experts, router entropy, bias norms, heatmap.

Collapse shows as a max/mean load ratio far above 1 and dead experts; balanced routing keeps the ratio
near 1 (MOE.md §9.4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from tunelab.io import atomic_write
from tunelab.methods.moe.balance import selection_counts
from tunelab.methods.moe.layer import MoEFeedForward, moe_layers
from tunelab.methods.moe.router import Routing


def load_stats(counts: torch.Tensor) -> dict[str, float]:
    """max/mean load ratio and dead-expert count from per-expert token counts (N,)."""
    mean = counts.float().mean().clamp(min=1e-9)
    return {"max_mean_load": float(counts.max() / mean), "dead_experts": float((counts == 0).sum())}


def active_params(model: torch.nn.Module) -> dict[str, int]:
    """Parameters a token uses: everything except the K_r-of-N_r routed experts it skips.

    ``router`` (the centroids, N_r x H per layer) is reported apart because the dense model has no
    router: the upcycled FFN parameters a token uses equal the dense FFN's exactly when
    (K_s + K_r) / m = 1, and the router adds N_r x H per MoE layer on top.
    """
    total = sum(p.numel() for p in model.parameters())
    skipped = router = 0
    for layer in moe_layers(model):
        per_expert = sum(p.numel() for p in layer.experts[0].parameters())
        skipped += per_expert * (len(layer.experts) - layer.router.cfg.top_k)
        router += layer.router.weight.numel()
    return {"active": total - skipped, "total": total, "router": router}


@torch.no_grad()
def routing_entropy(routing: Routing, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens of the entropy (nats) of the renormalised routed scores; 0-dim tensor."""
    p = routing.scores / routing.scores.sum(-1, keepdim=True).clamp(min=1e-20)
    entropy = -(p * p.clamp(min=1e-20).log()).sum(-1)  # (B, S)
    return (entropy * mask).sum() / mask.sum().clamp(min=1)


def layer_counts(layer: MoEFeedForward, mask: torch.Tensor) -> torch.Tensor:
    """Tokens routed to each expert in the layer's last forward, padding excluded: (N,)."""
    assert layer.last_routing is not None
    return selection_counts(layer.last_routing.indices, mask, len(layer.experts)).sum(0)


@torch.no_grad()
def router_report(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    """Forward ``batches`` and summarise routing per MoE layer (loads, ratios, dead, entropy, bias norm)."""
    layers = moe_layers(model)
    counts = [torch.zeros(len(layer.experts)) for layer in layers]
    entropy_sum, n_batches = [0.0] * len(layers), 0
    model.eval()
    device = next(model.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        model(**batch)
        mask = batch["attention_mask"].bool()
        for i, layer in enumerate(layers):
            counts[i] += layer_counts(layer, mask).cpu()
            assert layer.last_routing is not None  # set by the forward above (layer_counts checked it)
            entropy_sum[i] += float(routing_entropy(layer.last_routing, mask))
        n_batches += 1
    report: list[dict[str, Any]] = []
    for i, layer in enumerate(layers):
        report.append(
            {
                "load": counts[i].tolist(),
                **load_stats(counts[i]),
                "entropy": entropy_sum[i] / max(n_batches, 1),
                "bias_norm": float(layer.router.bias.norm()),
            }
        )
    return {
        "max_mean_load": max((r["max_mean_load"] for r in report), default=0.0),
        "dead_experts": sum(r["dead_experts"] for r in report),
        "layers": report,
    }


def plot_load_heatmap(report: Mapping[str, Any], path: Path) -> None:
    """PNG heatmap of each layer's share of tokens per routed expert."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    loads = torch.tensor([layer["load"] for layer in report["layers"]])
    share = loads / loads.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * share.shape[1], 1 + 0.5 * share.shape[0]))
    image = ax.imshow(share.numpy(), cmap="viridis", aspect="auto")
    ax.set_xlabel("routed expert")
    ax.set_ylabel("MoE layer")
    ax.set_title("expert load (share of routed tokens)")
    fig.colorbar(image, ax=ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
