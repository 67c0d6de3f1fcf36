"""Exemplar memory with a fixed total budget and herding selection (PROTOCOL 1.4).

Exemplars are stored as indices into the training arrays, per class in herding rank order,
so shrinking a class keeps a prefix of its ranking and never re-selects.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def herding(features: Tensor, m: int) -> list[int]:
    """Greedy mean-matching herding (iCaRL): ranked indices of `m` exemplars.

    Features are L2-normalised; at step k pick the unused i minimising
    || mu - (phi_i + sum of picked) / k ||, ties to the lowest index.
    """
    phi = torch.nn.functional.normalize(features.double(), dim=1)
    mu = phi.mean(dim=0)
    picked: list[int] = []
    running = torch.zeros_like(mu)
    used = torch.zeros(len(phi), dtype=torch.bool)
    for k in range(1, min(m, len(phi)) + 1):
        dist = ((mu - (phi + running) / k) ** 2).sum(dim=1)
        dist[used] = float("inf")
        i = int(torch.argmin(dist))  # first minimum on ties
        picked.append(i)
        used[i] = True
        running += phi[i]
    return picked


class ExemplarMemory:
    """Budget K shared equally by the seen classes: floor(K / N) per class."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.ranked: dict[int, np.ndarray] = {}  # class -> train indices, herding order

    def quota(self, num_seen: int) -> int:
        return self.budget // num_seen

    @property
    def classes(self) -> list[int]:
        return sorted(self.ranked)

    def per_class(self) -> int:
        """Exemplars currently held by each class (the largest class, for balance)."""
        return max((len(v) for v in self.ranked.values()), default=0)

    def reduce(self, m: int) -> None:
        self.ranked = {c: idx[:m] for c, idx in self.ranked.items()}

    def add(self, label: int, ranked_indices: np.ndarray) -> None:
        self.ranked[label] = np.asarray(ranked_indices, dtype=np.int64)

    def indices(self, classes: list[int] | None = None) -> np.ndarray:
        """Train-array indices of the exemplars of `classes` (all classes by default)."""
        chosen = self.classes if classes is None else classes
        parts = [self.ranked[c] for c in chosen]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def state(self) -> dict[str, list[int]]:
        return {str(c): idx.tolist() for c, idx in self.ranked.items()}
