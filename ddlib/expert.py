"""Discriminative distillation (seed Sec. 3.2-3.3, PROTOCOL 4) as a plug-in for any training loop.

Three steps, each usable alone: `select_similar_classes` (the old classes closest to the new
ones in the old model's feature space), `train_expert` (stage A on all the expert's data,
then stage B class-balanced) and `DiscriminativeDistillation`, the loss object. Its `fit`
does the three in one call and returns a callable Ln for any student's logits:

    dd = DiscriminativeDistillation.fit(old_model, data, new_indices, exemplars, ...)
    loss = my_loss + lambda_dd * dd(x, student_logits)

No baseline knows the expert exists: `methods/base.py` adds lambda_dd * Ln to its loss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from . import engine
from .engine import DeviceData, Schedule
from .losses import cross_entropy, dd_loss
from .models import Net, reinitialise

EXPERT_INITS = ("old", "scratch")


def class_centres(model: Net, data: DeviceData, indices_by_class: list[np.ndarray]) -> Tensor:
    """Mean raw feature of each class under `model` (eval mode, test transform, float32)."""
    centres = []
    for idx in indices_by_class:
        feats, _ = engine.infer(model, data, data.train_images(idx), autocast=False)
        centres.append(feats.mean(dim=0))
    return torch.stack(centres)


def select_similar_classes(new_centres: Tensor, old_centres: Tensor, new_classes: list[int],
                           old_classes: list[int], k: int) -> list[tuple[int, int, float]]:
    """Greedy nearest pairs (PROTOCOL 4.1 step 4): walk all (new, old) pairs by Euclidean
    distance, ties by (new, old) label; accept while the new class has < k partners and the
    old class is still free. Returns (new, old, distance) in acceptance order."""
    if k == 0 or not old_classes:
        return []
    # (n, s) read to the host at once: one copy, not one sync per pair
    dist = torch.cdist(new_centres.double(), old_centres.double()).tolist()
    pairs = sorted((dist[i][j], new_classes[i], old_classes[j])
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


def make_expert(old_model: Net, num_classes: int, init: str = "old") -> Net:
    """A trainable network of the old model's architecture with a fresh head of
    `num_classes` outputs of the old head's kind. `init`: old = start from the old model's
    features (PROTOCOL 4.1.5); scratch = fresh weights, as the dual-distillation method
    the paper builds on trains its expert."""
    if init not in EXPERT_INITS:
        raise ValueError(f"expert_init={init!r} is unknown; choose one of {list(EXPERT_INITS)}")
    expert = copy.deepcopy(old_model)
    if init == "scratch":
        reinitialise(expert.backbone)
    expert.head = old_model.head.fresh(num_classes)
    expert.requires_grad_(True)
    return expert


def balanced_indices(new_indices: list[np.ndarray], old_indices: list[np.ndarray],
                     rng: np.random.Generator) -> np.ndarray:
    """Stage B's training set for one epoch: every stored image of the similar old classes,
    and from each new class a uniform draw without replacement of as many images as the
    smallest old class holds. Without old classes the data are already balanced: all new."""
    if not old_indices:
        return np.concatenate(new_indices)
    per_class = min(len(i) for i in old_indices)
    picks = [rng.choice(idx, size=min(per_class, len(idx)), replace=False) for idx in new_indices]
    return np.concatenate(picks + old_indices)


def train_expert(expert: Net, data: DeviceData, classes: list[int],
                 new_indices: list[np.ndarray], old_indices: list[np.ndarray], *,
                 stage_a: Schedule, stage_b: Schedule, generator: torch.Generator,
                 desc: str = "expert", show_progress: bool = True,
                 after_stage_a: Callable[[Net], object] | None = None
                 ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Train `expert` to tell `classes` apart (labels = positions in `classes`): stage A on
    all new-class images and the old classes' exemplars, then stage B, class-balanced,
    resampled every epoch (PROTOCOL 4.1 steps 6-7). `after_stage_a(expert)` may look at the
    expert in between. Returns both stages' per-epoch history (loss, training accuracy)."""
    device = data.device
    to_local = torch.full((max(classes) + 1,), -1, dtype=torch.long, device=device)
    to_local[torch.tensor(classes, device=device)] = torch.arange(len(classes), device=device)

    def loss_fn(x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        _, logits = expert(x)
        target = to_local[y]
        return cross_entropy(logits, target), {"acc": _accuracy(logits, target)}

    history_a = engine.train(expert, data, np.concatenate(new_indices + old_indices), loss_fn,
                             stage_a, generator=generator, desc=f"{desc} A",
                             show_progress=show_progress)
    if after_stage_a is not None:
        after_stage_a(expert)
    seed = torch.randint(2**31, (1,), generator=generator, device=generator.device)
    rng = np.random.default_rng(int(seed))
    history_b = engine.train(expert, data, lambda _: balanced_indices(new_indices, old_indices, rng),
                             loss_fn, stage_b, generator=generator, desc=f"{desc} B",
                             show_progress=show_progress)
    expert.eval().requires_grad_(False)
    return history_a, history_b


def _accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """Top-1 (%) of a batch, as a detached tensor (the engine averages it per epoch)."""
    return (logits.detach().argmax(1) == target).float().mean() * 100


@dataclass
class DiscriminativeDistillation:
    """Ln (Eqs. 1-2): KD at temperature Tn from the frozen expert's t outputs to a student's
    logits at the same t classes. `classes` = global labels of the expert's outputs, in
    output order (the new classes, then the similar old ones)."""

    expert: Net
    classes: list[int]
    temperature: float = 2.0
    record: dict = field(default_factory=dict)  # selection, expert accuracy and history
    _idx: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # built here, not in the (compiled) step: setting it there made dynamo compile twice
        self._idx = torch.as_tensor(self.classes, device=next(self.expert.parameters()).device)

    @classmethod
    def fit(cls, old_model: Net, data: DeviceData, new_indices: dict[int, np.ndarray],
            exemplars: dict[int, np.ndarray], *, stage_a: Schedule, stage_b: Schedule,
            generator: torch.Generator, similar_k: int = 1, temperature: float = 2.0,
            init: str = "old", test_indices: np.ndarray | None = None, desc: str = "expert",
            show_progress: bool = True) -> DiscriminativeDistillation:
        """Select `similar_k` old classes per new class (by class centres under `old_model`),
        train the expert on the new classes and those, return Ln. `new_indices`: training
        images per new class; `exemplars`: stored images per old class (pass only what the
        expert may see). With `test_indices`, the record holds the expert's test accuracy."""
        new_classes = sorted(new_indices)
        old_classes = sorted(exemplars)
        centres = class_centres(old_model, data, [new_indices[c] for c in new_classes]
                                + [exemplars[o] for o in old_classes])
        pairs = select_similar_classes(centres[:len(new_classes)], centres[len(new_classes):],
                                       new_classes, old_classes, similar_k)
        similar = sorted(o for _, o, _ in pairs)
        classes = new_classes + similar
        expert = make_expert(old_model, len(classes), init)
        dd = cls(expert, classes, temperature)
        acc_a: list[float] = []
        history_a, history_b = train_expert(
            expert, data, classes, [new_indices[c] for c in new_classes],
            [exemplars[o] for o in similar], stage_a=stage_a, stage_b=stage_b,
            generator=generator, desc=desc, show_progress=show_progress,
            after_stage_a=None if test_indices is None else
            lambda e: acc_a.append(dd.accuracy(e, data, test_indices)))
        dd.record = {
            "similar_pairs": [[c, o, round(d, 4)] for c, o, d in pairs],
            "expert_classes": classes,
            "expert_loss_a": history_a[-1]["loss"] if history_a else None,
            "expert_loss_b": history_b[-1]["loss"] if history_b else None,
            "history_expert_a": history_a,
            "history_expert_b": history_b,
        }
        if test_indices is not None:
            dd.record.update(expert_acc_a=acc_a[0],
                             expert_acc_b=dd.accuracy(expert, data, test_indices))
        return dd

    def __call__(self, x: Tensor, logits: Tensor) -> Tensor:
        """Ln of a batch `x` whose student logits (over all seen classes) are `logits`."""
        with torch.no_grad():
            _, expert_logits = self.expert(x)
        return dd_loss(logits, expert_logits, self._idx, self.temperature)

    def accuracy(self, model: Net, data: DeviceData, test_indices: np.ndarray, *,
                 classifier: bool = False) -> float:
        """Top-1 (%) on the test images (among `test_indices`) of the expert's t classes,
        argmax over those t outputs: of the expert, or of a classifier (its logits at the
        expert's classes, in the expert's order), to compare the two."""
        idx = torch.as_tensor(test_indices, device=data.test_y.device)
        y = data.test_y[idx]
        classes = torch.as_tensor(self.classes, device=y.device)
        keep = torch.isin(y, classes)
        _, logits = engine.infer(model, data, data.test_x, idx[keep])
        if classifier:
            logits = logits[:, classes]
        target = (y[keep].unsqueeze(1) == classes).float().argmax(1)  # global -> position
        return round(float(_accuracy(logits, target)), 2)
