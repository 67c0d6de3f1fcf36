"""Loss terms as pure tensor functions (seed paper Eqs. 1-4, PROTOCOL 3 and 4.2).

All of them run in float32 (PROTOCOL trap 20) and average over the mini-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Temperature KD, Eqs. (1)/(3): -(1/B) sum_i sum_j p_ij log p^_ij, no T^2 factor.

    Both logit tensors cover the same classes in the same order; the teacher is detached.
    """
    teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return -(teacher * log_student).sum(dim=1).mean()


def old_knowledge_loss(logits: Tensor, old_logits: Tensor, temperature: float) -> Tensor:
    """Lo, Eq. (3): KD over the s old classes only (softmax over the old logits of both)."""
    return kd_loss(logits[:, : old_logits.shape[1]], old_logits, temperature)


def dd_loss(logits: Tensor, expert_logits: Tensor, idx: Tensor, temperature: float) -> Tensor:
    """Ln, Eqs. (1)-(2): KD from the expert's t outputs to the student's logits at `idx`."""
    return kd_loss(logits[:, idx], expert_logits, temperature)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Lc over all seen classes."""
    return F.cross_entropy(logits.float(), targets)


def less_forget_loss(features: Tensor, old_features: Tensor) -> Tensor:
    """UCIR less-forget constraint L_dis^G, Eq. (3) of Hou et al. (PROTOCOL 3.3):
    mean over the batch of 1 - cos(f_new(x), f_old(x)) on the un-normalised penultimate
    features of current and (detached) old model."""
    cos = F.cosine_similarity(features.float(), old_features.detach().float(), dim=1)
    return (1.0 - cos).mean()


def margin_ranking_loss(cosines: Tensor, targets: Tensor, num_old: int, margin: float,
                        k: int) -> Tensor:
    """UCIR inter-class separation L_mr, Eq. (5) of Hou et al. (PROTOCOL 3.3).

    `cosines` (B, N) are raw cosine scores (no sigma). Anchors are the samples whose label is
    old (< num_old); for each, g = its ground-truth cosine and h_1..h_k its k largest cosines
    over the new classes (columns num_old..N-1). Returns the mean over (anchor, k) of
    max(0, margin - g + h_k); 0 (with a graph) when the batch has no old-class sample.
    Every row is scored and the non-anchors masked out: no host sync, no shape that
    depends on the batch's labels (one compiled graph whatever the anchor count).
    """
    cosines = cosines.float()
    k = min(k, cosines.shape[1] - num_old)
    if k < 1:
        return cosines.sum() * 0.0
    anchors = targets < num_old
    # an anchor's label is an old column; others are masked out, whatever their label
    g = cosines.gather(1, targets.clamp(max=num_old - 1).unsqueeze(1))  # (B, 1)
    h = cosines[:, num_old:].topk(k, dim=1).values     # (B, k) hardest new classes
    hinge = torch.where(anchors.unsqueeze(1), F.relu(margin - g + h), 0.0)
    return hinge.sum() / (anchors.sum() * k).clamp(min=1)
