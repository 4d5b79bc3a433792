"""Dense -> DeepSeekMoE upcycling of BERT-family encoder FFNs and Llama-family decoder MLPs.

Experts come from the dense FFN (Sparse Upcycling, arXiv 2212.05055): ``copy`` makes each routed expert
a full copy; ``partition`` splits the intermediate neurons into m slices (an FFN is exactly the sum of
its neuron-slice sub-FFNs, LLaMA-MoE / NVIDIA's virtual groups, arXiv 2410.07524): the K_s shared
experts are the first K_s slices as one MLP (as HF DeepSeek does), routed expert r is slice
K_s + (r mod (m - K_s)). The routed output is multiplied by the compensating scale

    routed_scaling_factor = P / (K_r · g0)

with P = 1 (copy) or m - K_s (partition) and g0 the gate each selected expert gets under uniform scores
(1/K_r with normalised gates, 1/N_r for raw softmax, 1/2 for raw sigmoid). The upcycled layer equals
the dense FFN exactly when every token's selected experts add up to the whole FFN and the scores are
uniform (``router_init_std=0``), or with normalised gates over full copies (any router).

Default: shared = the first 3/4 of the neurons (K_s = m - 1 = 3), routed = 4 copies of the last 1/4,
top-1, raw sigmoid gates x 2. Every token sees the whole FFN at step 0 (shared 3/4 + one copy of the
last 1/4, gate 2·σ(0) = 1), the FFN parameters a token uses are exactly the dense FFN's (the router adds
4 x 384 centroids per MiniLM layer, 9,216 = 0.04 % of 22.7M), and the gate 2·σ(l) stays
differentiable, so the task loss trains the router (normalised top-1 would make every gate 1). Why,
measured on minilm-l6 with 128 Rotten Tomatoes sentences (``python bench/bench_moe.py --step0``): mean
per-token |MoE FFN(u) - dense FFN(u)| / |dense FFN(u)| per layer, and max |Δ logits| (random head):

- the former default (1 shared + 8 routed quarter slices, normalised top-2, scale 3; each token sees
  3/4 of the FFN with the last quarter replaced by two scaled guesses): 28-120 %, 3.5e-2. It is dense
  only in expectation, and trained 7 points under dense on RT (0.743 vs 0.811).
- this layout (measured with 8 routed copies; the sigmoid gate does not depend on N_r), router std 0:
  1e-7 (exact). Router std 1e-3: sigmoid 0.3-0.7 % (max |Δ logits| 3.1e-4), softmax x 8 0.6-1.3 %
  (5.6e-4). Router std 0.02: sigmoid 5-14 %, softmax 13-32 %. A raw softmax gate is N_r·s, a sigmoid
  gate 2·s: the same score spread moves it 4x less at N_r = 8, so sigmoid buys twice the routing
  spread at half the distance. ``upcycle_noise`` 0.01 would double the distance (0.5-1.5 %); the
  copies need no noise, as the router sends them different tokens from step 1.

Balance at top-1 (worst-layer max/mean load per optimizer step, RT example): the aux-free bias must
move in steps small against the spread of the scores (~3e-3 at std 1e-3), and the router must not
drift faster than the bias: AdamW moves each centroid weight by ~lr per step whatever its gradient,
i.e. the whole 1e-3-scale router within ~10 steps. γ = 1e-3 with the router at the base lr gave 2.6-3.0
(the bias flips whole experts on and off); γ = 1e-4 at the base lr gave 2.1-3.1 (the drift wins);
γ = 1e-4 with ``router_lr_scale`` 0.01 came down to 1.24-1.6 per step by step 100, and with 8 routed
copies to a worst layer of 1.20-1.51 on dev at the end over six runs (α1 0.01-0.1, γ 1e-4-3e-4, two
seeds), without a trend in α1 or γ: the max of 48 expert shares, each off by a few points of
routing noise. Four copies (the default ``n_routed_experts``) halve the draws and double each
expert's tokens: worst layer 1.17 / 1.17 (seeds 42 / 43), RT test 0.820 / 0.799 against dense
0.815 / 0.797 (8 copies: 0.817 / 0.787, load 1.34 / 1.24; bench/RESULTS.md). The worst layer is the
last, not the first, so ``first_k_dense`` stays 0.
Hand-written: no library upcycles encoder FFNs into DeepSeekMoE layers.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.moe.layer import Expert, MoEFeedForward
from tunelab.methods.moe.params import Params
from tunelab.methods.moe.router import Router, RouterConfig


class _DenseFFN:
    """The dense FFN's pieces at one site and how to put a MoE layer in its place.

    ``owner`` is a module :func:`_kind` recognised, so the pieces below exist and the projections are
    ``nn.Linear`` (the ``cast`` calls restate for the type checker what ``_kind`` checked at runtime).
    """

    up: nn.Linear
    gate: nn.Linear | None
    down: nn.Linear
    act: nn.Module

    def __init__(self, owner: nn.Module, kind: str) -> None:
        self.owner, self.kind = owner, kind
        if kind == "bert":  # BertLayer-like: intermediate(dense, act) -> output(dense, dropout, LayerNorm)
            inter, out = self._child("intermediate"), self._child("output")
            self.up, self.gate = cast(nn.Linear, inter.dense), None
            self.down, self.act = cast(nn.Linear, out.dense), cast(nn.Module, inter.intermediate_act_fn)
        else:  # LlamaMLP-like: down(act(gate(x)) * up(x))
            self.up, self.gate, self.down, self.act = (
                cast(nn.Linear, owner.up_proj),
                cast(nn.Linear, owner.gate_proj),
                cast(nn.Linear, owner.down_proj),
                cast(nn.Module, owner.act_fn),
            )

    def _child(self, name: str) -> nn.Module:
        """The owner's submodule ``name`` (``intermediate`` or ``output`` of a BERT layer)."""
        return cast(nn.Module, getattr(self.owner, name))

    def replace(self, parent: nn.Module, attr: str, moe: MoEFeedForward) -> None:
        """Swap the dense FFN for ``moe`` (BERT keeps BertOutput's dropout, residual and LayerNorm)."""
        if self.kind == "bert":
            self.owner.intermediate = moe
            self._child("output").dense = nn.Identity()
        else:
            setattr(parent, attr, moe)


def _kind(module: nn.Module) -> str | None:
    inter, out = getattr(module, "intermediate", None), getattr(module, "output", None)
    if (
        isinstance(getattr(inter, "dense", None), nn.Linear)
        and hasattr(inter, "intermediate_act_fn")
        and isinstance(getattr(out, "dense", None), nn.Linear)
    ):
        return "bert"
    if all(isinstance(getattr(module, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj")):
        return "llama" if hasattr(module, "act_fn") else None
    return None


def find_ffn_sites(model: nn.Module) -> list[tuple[str, _DenseFFN]]:
    """Dense FFN sites in layer order; refuses architectures it does not know, naming what it found."""
    sites = [(name, _DenseFFN(m, kind)) for name, m in model.named_modules() if (kind := _kind(m))]
    if not sites:
        found = sorted(
            {
                type(m).__name__
                for m in model.modules()
                if sum(isinstance(c, nn.Linear) for c in m.children()) >= 2
            }
        )
        raise ConfigError(
            f"methods.moe: no BERT-family FFN (intermediate.dense + output.dense) or Llama-family MLP "
            f"(gate_proj/up_proj/down_proj) found in {type(model).__name__}; modules with several Linear "
            f"layers: {', '.join(found) or 'none'}. Upcycling supports these two families only."
        )
    return sites


def compensating_scale(params: Params) -> float:
    """P / (K_r · g0): the routed scale that makes the upcycled layer reproduce the dense FFN (module doc)."""
    k, n = params.top_k, params.n_routed_experts
    pieces = 1 if params.init == "copy" else params.granularity - params.n_shared
    if params.norm_topk_prob or params.topk_before_softmax:
        gate = 1.0 / k
    else:
        gate = 1.0 / n if params.score_func == "softmax" else 0.5
    return pieces / (k * gate)


def _slice_expert(dense: _DenseFFN, neurons: torch.Tensor) -> Expert:
    """An Expert holding the given intermediate neurons of the dense FFN (weights copied)."""
    up_bias = dense.up.bias is not None
    expert = Expert(dense.up.in_features, len(neurons), dense.act, dense.gate is not None, up_bias)
    with torch.no_grad():
        for mine, theirs in ((expert.up, dense.up), (expert.gate, dense.gate)):
            if mine is not None:
                assert theirs is not None  # the expert is gated exactly when the dense FFN is
                mine.weight.copy_(theirs.weight[neurons])
                if up_bias:
                    mine.bias.copy_(theirs.bias[neurons])
        expert.down.weight.copy_(dense.down.weight[:, neurons])
    return expert


@torch.no_grad()
def _perturb(expert: Expert, noise: float, reinit_ratio: float) -> None:
    """Break the symmetry of copied experts: relative Gaussian noise and Drop-Upcycling re-init."""
    linears = [lin for lin in (expert.gate, expert.up) if lin is not None]
    width = expert.up.out_features
    if reinit_ratio > 0:
        rows = torch.randperm(width)[: round(reinit_ratio * width)]
        for lin in linears:
            lin.weight[rows] = torch.randn_like(lin.weight[rows]) * lin.weight.std()
        expert.down.weight[:, rows] = torch.randn_like(expert.down.weight[:, rows]) * expert.down.weight.std()
    if noise > 0:
        for lin in [*linears, expert.down]:
            lin.weight.add_(torch.randn_like(lin.weight) * noise * lin.weight.std())


def build_moe(dense: _DenseFFN, params: Params, perturb: bool) -> MoEFeedForward:
    """One MoE layer from one dense FFN as ``params`` says (see the module docstring for the layout)."""
    width = dense.up.out_features
    m = 1 if params.init == "copy" else params.granularity
    if width % m:
        raise ConfigError(f"methods.moe.params.granularity: {m} does not divide the FFN width {width}")
    piece = width // m
    neurons = torch.arange(width)
    shared = _slice_expert(dense, neurons[: params.n_shared * piece]) if params.n_shared else None
    n_slices = m - params.n_shared
    experts = []
    for r in range(params.n_routed_experts):
        start = (params.n_shared + r % n_slices) * piece
        expert = _slice_expert(dense, neurons[start : start + piece])
        if perturb:
            _perturb(expert, params.upcycle_noise, params.reinit_ratio)
        experts.append(expert)
    cfg = RouterConfig(
        n_routed=params.n_routed_experts,
        top_k=params.top_k,
        score_func=params.score_func,
        norm_topk_prob=params.norm_topk_prob,
        scaling=params.routed_scaling_factor or compensating_scale(params),
        n_group=params.n_group,
        topk_group=params.topk_group,
        topk_before_softmax=params.topk_before_softmax,
        use_bias=params.bias_update_speed > 0,
    )
    router = Router(dense.up.in_features, cfg, params.router_init_std)
    down_bias = dense.down.bias.detach() if dense.down.bias is not None else None
    moe = MoEFeedForward(dense.up.in_features, router, experts, shared, down_bias, params.capacity_factor)
    moe.params = params
    return moe.to(device=dense.up.weight.device)


def upcycle(model: nn.Module, params: Params, perturb: bool = True) -> nn.Module:
    """Replace every dense FFN after the first ``first_k_dense`` with a MoE layer, in place; returns model.

    ``perturb=False`` builds the same structure without noise (used when weights are loaded afterwards).
    """
    sites = find_ffn_sites(model)
    for name, dense in sites[params.first_k_dense :]:
        parent_name, _, attr = name.rpartition(".")
        moe = build_moe(dense, params, perturb)
        moe.to(dtype=dense.up.weight.dtype)
        moe.router.float()  # router math and bias stay fp32 ([V3-code] model.py:564)
        dense.replace(model.get_submodule(parent_name), attr, moe)
    return model
