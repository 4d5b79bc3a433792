"""Balance losses and the aux-loss-free bias rule as pure functions (MOE.md §5 and §8).

Shapes: ``scores`` (B, S, N) fp32 affinities of the N routed experts, ``indices`` (B, S, K) selected
experts, ``mask`` (B, S) bool real (non-padding) tokens. Scores are renormalised over the routed
experts (s' = s / Σ s, [V3] eq. 19) before averaging, a no-op for softmax, so Σ_i P_i = 1 and every
loss equals its coefficient at perfect balance for either score function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selection_counts(indices: torch.Tensor, mask: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Tokens routed to each expert per sequence: (B, S, K) -> (B, N), padding excluded."""
    one_hot = F.one_hot(indices, n_experts).sum(-2).float()  # (B, S, N)
    return (one_hot * mask.unsqueeze(-1)).sum(1)


def fractions_and_probs(
    scores: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence f_i = N/(K·T) Σ_t 1(t selects i) and P_i = (1/T) Σ_t s'_{i,t}; both (B, N)."""
    n, k = scores.shape[-1], indices.shape[-1]
    maskf = mask.float()
    tokens = maskf.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1) T per sequence
    f = selection_counts(indices, mask, n) * (n / k) / tokens
    normalised = scores / scores.sum(-1, keepdim=True).clamp(min=1e-20)
    p = (normalised * maskf.unsqueeze(-1)).sum(1) / tokens
    return f, p


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1, *t.shape[2:])


def expert_balance_loss(
    scores: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor, alpha: float
) -> torch.Tensor:
    """L_ExpBal = α1 Σ_i f_i P_i over all real tokens of the batch ([DSM] eq. 12-14)."""
    f, p = fractions_and_probs(_flat(scores), _flat(indices), _flat(mask))
    return alpha * (f * p).sum()


def device_balance_loss(
    scores: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor, n_devices: int, alpha: float
) -> torch.Tensor:
    """L_DevBal = α2 Σ_d f'_d P'_d, f' = mean of member f, P' = sum of member P ([DSM] eq. 15-17)."""
    f, p = fractions_and_probs(_flat(scores), _flat(indices), _flat(mask))
    return alpha * (f.view(n_devices, -1).mean(1) * p.view(n_devices, -1).sum(1)).sum()


def sequence_balance_loss(
    scores: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor, alpha: float
) -> torch.Tensor:
    """V3 L_Bal = α Σ_i f_i P_i per sequence (T = its real tokens), mean over sequences ([V3] eq. 17-20)."""
    f, p = fractions_and_probs(scores, indices, mask)
    has_tokens = mask.any(1)
    return alpha * (f * p).sum(-1)[has_tokens].mean()


def bias_update(bias: torch.Tensor, counts: torch.Tensor, gamma: float) -> torch.Tensor:
    """b_i + γ·sign(c̄ − c_i): overloaded experts −γ, underloaded +γ, exactly average 0 ([V3] §2.1.2)."""
    return bias + gamma * torch.sign(counts.mean() - counts)
