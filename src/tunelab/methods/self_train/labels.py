"""Pseudo-label selection and the student's losses on them: pure functions of logits.

Single-label logits are (B, C) with one class per row; multi-label logits are (B, C) with one
independent 0/1 decision per label, so selection and losses work per (row, label). Every loss is summed
over the kept targets and divided by all of them (FixMatch's normalisation: few kept rows pull little).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tunelab.methods.losses import topk_kl


def pseudo_labels(
    logits: torch.Tensor, threshold: float, multi_label: bool, class_fraction: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's targets and which of them are kept: confidence strictly above ``threshold``.

    Single-label (B, C): the argmax (B,) and whether its softmax probability exceeds the threshold.
    Multi-label (B, C): per label 1 when the sigmoid exceeds 0.5, kept when max(p, 1 - p) exceeds it.
    With ``class_fraction`` each class (multi-label: each label's 0 and 1) also keeps at most its quota,
    ``ceil(class_fraction x B / classes)`` of the rows predicted as it, the most confident first.
    """
    if multi_label:
        probs = logits.float().sigmoid()
        targets, confidence = (probs > 0.5).float(), torch.maximum(probs, 1 - probs)
        keep = confidence > threshold
        if class_fraction is not None:
            quota = math.ceil(class_fraction * len(logits) / 2)
            for label in range(logits.shape[-1]):  # each label is a 2-class problem of its own
                ranks = class_ranks(confidence[:, label], targets[:, label].long(), 2)
                keep[:, label] &= ranks < quota
        return targets, keep
    confidence, targets = logits.float().softmax(-1).max(-1)
    keep = confidence > threshold
    if class_fraction is not None:
        quota = math.ceil(class_fraction * len(logits) / logits.shape[-1])
        keep &= class_ranks(confidence, targets, logits.shape[-1]) < quota
    return targets, keep


def class_ranks(confidence: torch.Tensor, targets: torch.Tensor, classes: int) -> torch.Tensor:
    """Each row's rank (0 = most confident) among the rows of its predicted class; ties by position."""
    order = confidence.argsort(descending=True, stable=True)
    onehot = F.one_hot(targets[order], classes)
    ranks = torch.empty_like(targets)
    ranks[order] = (onehot.cumsum(0) * onehot).sum(-1) - 1
    return ranks


def pseudo_label_loss(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (multi-label: BCE) summed over the kept targets, divided by all of them."""
    if targets.dim() == logits.dim():
        per = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    else:
        per = F.cross_entropy(logits.float(), targets, reduction="none")
    return (per * keep).sum() / keep.numel()


def soft_pseudo_label_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, keep: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² x KL(teacher_T || student_T) summed over the kept targets, divided by all of them.

    Single-label (B, C): distill's KL (``losses.topk_kl`` with every class) per kept row. Multi-label:
    T² x the binary cross-entropy to the teacher's tempered sigmoids per kept (row, label), the binary
    KL plus the teacher's entropy (a constant: the same gradients).
    """
    if keep.dim() == logits.dim():
        soft = (teacher_logits.float() / temperature).sigmoid()
        return temperature**2 * pseudo_label_loss(logits.float() / temperature, soft, keep)
    every = torch.arange(logits.shape[-1], device=logits.device).expand_as(teacher_logits)
    return topk_kl(logits, teacher_logits, every, temperature, keep) * keep.float().mean()
