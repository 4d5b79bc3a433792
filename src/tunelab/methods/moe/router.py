"""DeepSeekMoE router: centroid affinities, softmax|sigmoid, (group-limited) top-K, gate normalisation.

Follows MOE.md §1, §4, §7, §8 exactly: scores are computed in fp32 from bias-free centroids; top-K is
taken *after* the score function (softmax-then-top-K) unless the Mixtral-compatible order is asked
for; the aux-loss-free bias b_i only changes which experts are selected, never the gate value.
Hand-written because no library routes encoder tokens this way (HF's DeepSeek routers are decoder-only
and never update the bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RouterConfig:
    """Routing choices of one MoE layer (see ``params.Params`` for their meaning and sources)."""

    n_routed: int
    top_k: int
    score_func: str = "softmax"
    norm_topk_prob: bool = True
    scaling: float = 1.0
    n_group: int = 1
    topk_group: int = 1
    topk_before_softmax: bool = False
    use_bias: bool = False


@dataclass(frozen=True)
class Routing:
    """One forward's routing: fp32 affinities of every routed expert, the chosen experts and their gates."""

    scores: torch.Tensor  # (T, N) s_{i,t}
    indices: torch.Tensor  # (T, K) selected expert ids
    weights: torch.Tensor  # (T, K) g_{i,t} (normalised and scaled), fp32


def _group_mask(selection: torch.Tensor, cfg: RouterConfig) -> torch.Tensor:
    """Keep only each token's ``topk_group`` best expert groups ([V3-code] model.py:584-592).

    A group's score is the sum of its top-2 selection scores when the aux-free bias is in use, else its
    maximum, as in DeepSeek's reference code.
    """
    tokens = selection.shape[0]
    grouped = selection.view(tokens, cfg.n_group, -1)  # (T, G, N/G)
    if cfg.use_bias and grouped.shape[-1] >= 2:
        group_scores = grouped.topk(2, dim=-1).values.sum(-1)
    else:
        group_scores = grouped.amax(-1)
    keep = torch.zeros_like(group_scores, dtype=torch.bool)
    keep.scatter_(1, group_scores.topk(cfg.topk_group, dim=-1).indices, True)
    return selection.masked_fill(~keep.repeat_interleave(grouped.shape[-1], dim=1), float("-inf"))


def route(logits: torch.Tensor, bias: torch.Tensor, cfg: RouterConfig) -> Routing:
    """Scores, top-K selection and gate values from fp32 router logits (T, N)."""
    if cfg.topk_before_softmax:  # Mixtral/LitGPT order: top-K of logits, softmax over the K
        top = logits.topk(cfg.top_k, dim=-1)
        weights = F.softmax(top.values, dim=-1)
        return Routing(F.softmax(logits, dim=-1), top.indices, weights * cfg.scaling)
    scores = F.softmax(logits, dim=-1) if cfg.score_func == "softmax" else torch.sigmoid(logits)
    selection = scores + bias if cfg.use_bias else scores  # b_i only routes ([V3] eq. 16)
    if cfg.topk_group < cfg.n_group:
        selection = _group_mask(selection, cfg)
    indices = selection.topk(cfg.top_k, dim=-1).indices  # (T, K)
    weights = scores.gather(1, indices)
    if cfg.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return Routing(scores, indices, weights * cfg.scaling)


class Router(nn.Module):
    """Centroids e_i (rows of ``weight``, no bias term) in fp32 plus the fp32 aux-free bias buffer.

    The bias is a persistent buffer (saved and restored with the model, so resume is exact) and never
    receives a gradient; ``balance.bias_update`` moves it between optimizer steps.
    """

    bias: torch.Tensor  # (N,) fp32 buffer, registered in __init__

    def __init__(self, hidden_size: int, cfg: RouterConfig, init_std: float = 0.02) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed, hidden_size, dtype=torch.float32))
        if init_std > 0:
            nn.init.normal_(self.weight, std=init_std)
        else:
            nn.init.zeros_(self.weight)
        self.register_buffer("bias", torch.zeros(cfg.n_routed, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> Routing:
        """Route tokens x (T, H); the math runs in fp32 even under autocast."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.weight.float())  # (T, N)
            return route(logits, self.bias.float(), self.cfg)
