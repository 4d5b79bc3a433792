"""Soft-target losses shared by distillation, R-Drop and label smoothing, for any logits shape.

Sequence-level tasks give logits (B, C); token-level tasks (NER) give (B, T, C) with labels -100 on
positions that carry no label. Every loss here averages over the *valid* positions only, so padding
and ignored sub-words never pull the student, and a (B, C) batch reduces like ``batchmean``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from tunelab.errors import ConfigError

IGNORE_INDEX = -100  # transformers' convention for positions without a label


def model_logits(outputs: object) -> torch.Tensor:
    """``outputs.logits``, or a clear error for heads that have none (e.g. QA start/end logits)."""
    logits: torch.Tensor | None = getattr(outputs, "logits", None)
    if logits is None:
        raise ConfigError(
            f"{type(outputs).__name__} has no `logits`; distill, rdrop and train.label_smoothing need a task "
            "whose head returns one logits tensor (classification, token classification)"
        )
    return logits


def valid_mask(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Bool mask of shape ``logits.shape[:-1]``: positions whose prediction is trained.

    (B, C): every example. (B, T, C): tokens with a label other than -100 when the batch has labels,
    else the attention mask's tokens.
    """
    if logits.dim() == 2:
        return torch.ones(logits.shape[:1], dtype=torch.bool, device=logits.device)
    labels = batch.get("labels")
    if labels is not None and labels.shape == logits.shape[:-1]:
        return labels != IGNORE_INDEX
    return batch["attention_mask"].bool()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (shape of ``mask``) over the True positions; 0 when there are none."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def topk_kl(
    student_logits: torch.Tensor,
    teacher_values: torch.Tensor,
    teacher_indices: torch.Tensor,
    temperature: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """T² · KL(teacher_T || student_T), the teacher given by its top-k logits (Hinton et al. 2015).

    The teacher distribution is the softmax of its k largest logits at temperature T (the rest get
    probability 0); with k = C it is the exact KL. The student's log-probabilities are those of the
    full softmax, gathered at the teacher's indices. Shapes: student (..., C), teacher (..., k).
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher_indices)
    log_p = F.log_softmax(teacher_values.float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (...,)
    return temperature**2 * masked_mean(kl, mask)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """½(KL(a||b) + KL(b||a)) per valid position, averaged: R-Drop's consistency term (Liang et al. 2021)."""
    log_a = F.log_softmax(logits_a.float(), dim=-1)
    log_b = F.log_softmax(logits_b.float(), dim=-1)
    kl = 0.5 * ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(-1)
    return masked_mean(kl, mask)


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None, epsilon: float) -> torch.Tensor:
    """Cross-entropy with label smoothing ε over (B, C) or (B, T, C) logits; -100 labels are ignored."""
    if labels is None:
        raise ConfigError(
            "train.label_smoothing: this task's batches carry no `labels` to smooth; set it to 0"
        )
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=epsilon,
    )
