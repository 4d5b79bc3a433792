"""The MoE feed-forward module: shared experts + gated fine-grained routed experts, vectorised dispatch.

h = Σ_shared FFN_i(u) + Σ_routed g_i FFN_i(u) (+ the dense down-projection bias once); [DSM] eq. 9.
Dispatch sorts the (token, slot) pairs by expert and runs each expert once on its contiguous slice,
scattering back with ``index_add_``: the Python loop is over experts, never over tokens. Experts are
plain ``nn.Linear`` submodules with stable names (``experts.3.up``) so PEFT ``target_modules`` hit them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tunelab.methods.moe.router import Router, Routing


class Expert(nn.Module):
    """One FFN: ``down(act(up(x)))``, or gated ``down(act(gate(x)) * up(x))`` for Llama-family MLPs."""

    def __init__(self, hidden: int, width: int, act: nn.Module, gated: bool, up_bias: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden, width, bias=up_bias) if gated else None
        self.up = nn.Linear(hidden, width, bias=up_bias)
        self.down = nn.Linear(width, hidden, bias=False)  # the dense down bias is added once by the layer
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expert output for tokens x (T, H) -> (T, H)."""
        hidden = self.act(self.gate(x)) * self.up(x) if self.gate is not None else self.act(self.up(x))
        out: torch.Tensor = self.down(hidden)
        return out


def dispatch(
    x: torch.Tensor, routing: Routing, experts: nn.ModuleList, capacity: int | None
) -> tuple[torch.Tensor, int]:
    """Σ_k g_{k,t} · expert_{idx[t,k]}(x_t) for tokens x (T, H); returns (output, dropped assignments).

    With a capacity, an expert keeps its first ``capacity`` assignments in token order (the stable sort
    preserves it) and the rest contribute nothing.
    """
    tokens, k = routing.indices.shape
    flat = routing.indices.reshape(-1)  # (T*K,)
    order = torch.argsort(flat, stable=True)
    token_of = order // k  # (T*K,) token of each sorted assignment
    gates = routing.weights.reshape(-1)[order].to(x.dtype)
    counts = torch.bincount(flat, minlength=len(experts)).tolist()  # one host sync per layer
    out = torch.zeros_like(x)
    dropped, start = 0, 0
    for expert, n in zip(experts, counts, strict=True):
        keep = n if capacity is None else min(n, capacity)
        # An expert with no tokens still runs on its empty slice: its parameters then get a (zero)
        # gradient, which DDP needs from every parameter of every rank before it all-reduces.
        idx = token_of[start : start + keep]
        out.index_add_(0, idx, expert(x[idx]) * gates[start : start + keep, None])
        dropped += n - keep
        start += n
    return out, dropped


class MoEFeedForward(nn.Module):
    """DeepSeekMoE FFN replacing a dense FFN; keeps the last forward's routing for losses and stats.

    ``last_routing`` holds scores (…, N) and indices (…, K) shaped like the input's leading dims, so the
    training step can mask padding with the batch's attention mask. ``step_counts`` / ``step_gates``
    accumulate masked per-expert token counts and gate sums over an optimizer step (for the
    aux-free bias update, load statistics and ESFT scoring); they are not saved with the model.
    """

    # Buffers registered in __init__: (N,) fp32 per routed expert, and the saved ESFT selection.
    step_counts: torch.Tensor
    step_gates: torch.Tensor
    esft_keep: torch.Tensor  # (N,) bool
    esft_selected: torch.Tensor  # () bool

    def __init__(
        self,
        hidden: int,
        router: Router,
        experts: list[Expert],
        shared: Expert | None,
        out_bias: torch.Tensor | None,
        capacity_factor: float | None,
    ) -> None:
        super().__init__()
        self.router = router
        self.experts = nn.ModuleList(experts)
        self.shared = shared
        self.out_bias = nn.Parameter(out_bias.clone()) if out_bias is not None else None
        self.capacity_factor = capacity_factor
        self.params: Any = None  # the method's Params (balance coefficients), set by upcycle
        self.last_routing: Routing | None = None
        self.last_dropped = 0
        n = len(experts)
        self.register_buffer("step_counts", torch.zeros(n, dtype=torch.float32), persistent=False)
        self.register_buffer("step_gates", torch.zeros(n, dtype=torch.float32), persistent=False)
        # ESFT selection, saved with the model so a resumed run keeps training the same experts.
        self.register_buffer("esft_keep", torch.ones(n, dtype=torch.bool))
        self.register_buffer("esft_selected", torch.zeros((), dtype=torch.bool))

    def capacity(self, tokens: int) -> int | None:
        """Per-expert capacity for ``tokens`` tokens, or None when dropless."""
        if self.capacity_factor is None:
            return None
        k = self.router.cfg.top_k
        return math.ceil(self.capacity_factor * tokens * k / len(self.experts))

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """FFN output for x (..., H): shared + routed (+ dense down bias)."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])  # (B*S, H)
        routing = self.router(flat)
        out, self.last_dropped = dispatch(flat, routing, self.experts, self.capacity(flat.shape[0]))
        if self.shared is not None:
            out = out + self.shared(flat)
        if self.out_bias is not None:
            out = out + self.out_bias
        self.last_routing = Routing(
            scores=routing.scores.view(*lead, -1),
            indices=routing.indices.view(*lead, -1),
            weights=routing.weights.view(*lead, -1),
        )
        return out.view(*lead, -1)


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """Every MoE layer of ``model`` in module order (works through DDP/PEFT wrappers)."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]
