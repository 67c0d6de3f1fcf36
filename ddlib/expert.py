"""The temporary expert of discriminative distillation (seed Sec. 3.2-3.3, PROTOCOL 4).

Nothing outside this module and `methods/base.py` knows the expert exists: a baseline gets
DD by the round lifecycle adding lambda_dd * Ln to its own loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from . import engine
from .engine import DeviceData, Schedule
from .losses import cross_entropy, dd_loss
from .models import Net


def class_centres(model: Net, data: DeviceData, indices_by_class: list[np.ndarray]) -> Tensor:
    """Mean raw feature of each class under `model` (eval mode, test transform)."""
    centres = []
    for idx in indices_by_class:
        feats, _ = engine.infer(model, data, data.train_images(idx))
        centres.append(feats.mean(dim=0))
    return torch.stack(centres)


def select_similar_classes(new_centres: Tensor, old_centres: Tensor, new_classes: list[int],
                           old_classes: list[int], k: int) -> list[tuple[int, int, float]]:
    """Greedy nearest pairs (PROTOCOL 4.1 step 4): walk all (new, old) pairs by Euclidean
    distance, ties by (new, old) label; accept while the new class has < k partners and the
    old class is still free. Returns (new, old, distance) in acceptance order."""
    if k == 0 or not old_classes:
        return []
    dist = torch.cdist(new_centres.double(), old_centres.double())  # (n, s)
    pairs = sorted((float(dist[i, j]), new_classes[i], old_classes[j])
                   for i in range(len(new_classes)) for j in range(len(old_classes)))
    partners = {c: 0 for c in new_classes}
    taken: set[int] = set()
    chosen: list[tuple[int, int, float]] = []
    for d, c, o in pairs:
        if partners[c] < k and o not in taken:
            chosen.append((c, o, d))
            partners[c] += 1
            taken.add(o)
            if len(taken) == len(old_classes) or all(n == k for n in partners.values()):
                break
    return chosen


@dataclass
class DiscriminativeDistillation:
    """Ln: trained once per round by `prepare`, then called on every mini-batch."""

    similar_k: int
    temperature: float
    stage_a: Schedule
    stage_b: Schedule
    show_progress: bool = True
    expert: Net | None = None
    idx: Tensor | None = None  # global labels of the expert's t outputs, in output order
    record: dict = field(default_factory=dict)

    def prepare(self, *, old_model: Net, data: DeviceData, new_classes: list[int],
                new_indices: dict[int, np.ndarray], exemplars: dict[int, np.ndarray],
                test_indices: np.ndarray, generator: torch.Generator, round_idx: int) -> None:
        """Select similar old classes and train the expert (stages A and B)."""
        old_classes = sorted(exemplars)
        centres = class_centres(old_model, data, [new_indices[c] for c in new_classes]
                                + [exemplars[o] for o in old_classes])
        pairs = select_similar_classes(centres[:len(new_classes)], centres[len(new_classes):],
                                       new_classes, old_classes, self.similar_k)
        similar = sorted(o for _, o, _ in pairs)
        classes = list(new_classes) + similar
        device = data.device
        self.idx = torch.tensor(classes, device=device)
        to_local = torch.full((int(max(classes)) + 1,), -1, dtype=torch.long, device=device)
        to_local[self.idx] = torch.arange(len(classes), device=device)

        expert = copy.deepcopy(old_model)  # features start from the old model (PROTOCOL 4.1.5)
        expert.head = old_model.head.fresh(len(classes))
        expert.bias_layers = torch.nn.ModuleList()
        for p in expert.parameters():
            p.requires_grad_(True)

        def loss_fn(x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            _, logits = expert(x)
            loss = cross_entropy(logits, to_local[y])
            return loss, {}

        new_idx = np.concatenate([new_indices[c] for c in new_classes])
        old_idx = [exemplars[o] for o in similar]
        history_a = engine.train(expert, data, np.concatenate([new_idx, *old_idx]), loss_fn,
                                 self.stage_a, generator=generator, show_progress=self.show_progress,
                                 desc=f"round {round_idx} expert A")
        self._eval = (data, test_indices, to_local)
        acc_a = self.accuracy(expert)
        per_old = min((len(i) for i in old_idx), default=None)
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))

        def balanced(epoch: int) -> np.ndarray:
            # Stage B: down-sample each new class to the old classes' exemplar count.
            if per_old is None:
                return new_idx
            picks = [rng.choice(new_indices[c], size=min(per_old, len(new_indices[c])),
                                replace=False) for c in new_classes]
            return np.concatenate(picks + old_idx)

        history_b = engine.train(expert, data, balanced, loss_fn, self.stage_b,
                                 generator=generator, show_progress=self.show_progress,
                                 desc=f"round {round_idx} expert B")
        expert.eval()
        for p in expert.parameters():
            p.requires_grad_(False)
        self.expert = expert
        self.record = {
            "similar_pairs": [[c, o, round(d, 4)] for c, o, d in pairs],
            "expert_classes": classes,
            "expert_acc_a": acc_a,
            "expert_acc_b": self.accuracy(expert),
            "expert_loss_a": history_a[-1]["loss"] if history_a else None,
            "expert_loss_b": history_b[-1]["loss"] if history_b else None,
        }

    def __call__(self, x: Tensor, logits: Tensor) -> Tensor:
        with torch.no_grad():
            _, expert_logits = self.expert(x)
        return dd_loss(logits, expert_logits, self.idx, self.temperature)

    def accuracy(self, model: Net, *, classifier: bool = False) -> float:
        """Top-1 (%) on the test images of the expert's t classes, argmax over those t
        outputs: of the expert, or of a classifier (its logits at `idx`), to compare them."""
        data, test_indices, to_local = self._eval
        y = data.test_y[torch.as_tensor(test_indices, device=data.test_y.device)]
        keep = torch.isin(y, self.idx)
        images = data.test_x[torch.as_tensor(test_indices, device=y.device)][keep]
        _, logits = engine.infer(model, data, images)
        if classifier:  # global logits -> the expert's t classes, in the expert's order
            logits = logits[:, self.idx]
        return round(100.0 * float((logits.argmax(1) == to_local[y[keep]]).float().mean()), 2)
