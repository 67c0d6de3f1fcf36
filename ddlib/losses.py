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
