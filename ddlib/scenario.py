"""What a run learns from: a dataset by name, its class order, its rounds (PROTOCOL 1.2-1.3).

`load_dataset` dispatches to the loaders of `data` (synthetic, CIFAR-100, .npz arrays) and
`imagenet`; `Scenario` relabels a dataset by a class order and splits it into rounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data
from .data import ImageArrays
from .imagenet import imagenet
from .names import DATASETS, IMAGENET_DATASETS


def load_dataset(name: str, *, data_dir: str | Path | None = None, download: bool = False,
                 **sizes: int) -> ImageArrays:
    """Load dataset ``name``: synthetic (with ``sizes``), cifar100 (``data_dir`` is the root
    folder), arrays (``data_dir`` is the .npz file), imagenet100 / imagenet (``data_dir`` is
    the ImageFolder root; ``sizes`` may give image_size)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if name == "synthetic":
        return data.synthetic(**sizes)
    is_imagenet = name in IMAGENET_DATASETS
    extra = [k for k in sizes if not (is_imagenet and k == "image_size")]
    if extra:
        raise ValueError(f"{', '.join(extra)} do not apply to dataset {name!r}")
    if data_dir is None:
        raise ValueError(f"data_dir is required for dataset {name!r}")
    if is_imagenet:
        return imagenet(data_dir, subset=name == "imagenet100", **sizes)
    return (data.cifar100(data_dir, download=download) if name == "cifar100"
            else data.arrays(data_dir))


def class_order(num_classes: int, order: int, *, seed: int | None = None) -> np.ndarray:
    """Class order ``order``: ``np.random.seed(1993 + order); np.random.permutation(C)``
    (PROTOCOL.md 1.2), or the permutation of ``seed`` when given; computed on a private
    legacy RNG so the global one is untouched."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    seed = 1993 + order if seed is None else seed
    return np.random.RandomState(seed).permutation(num_classes).astype(np.int64)


def dedicated_order_seed(num_classes: int, increment: int, followed: int,
                         others: tuple[int, ...]) -> int:
    """Figure 1's class order (PROTOCOL 5.2): the first numpy legacy seed whose
    ``permutation(num_classes)``, in rounds of ``increment``, brings class ``followed`` in
    round 1 and each of ``others`` in a different later round."""
    rounds = -(-num_classes // increment)
    if not 0 < len(others) < rounds:
        raise ValueError(f"{len(others)} other classes cannot each take a different one of "
                         f"the {rounds - 1} later rounds of increment={increment}")
    for seed in range(2**16):
        position = np.argsort(np.random.RandomState(seed).permutation(num_classes))
        later = {int(position[c]) // increment for c in others}
        if position[followed] < increment and len(later) == len(others) and 0 not in later:
            return seed
    raise ValueError(f"no seed below 65536 gives such an order (increment={increment})")


def round_sizes(num_classes: int, init_classes: int, increment: int) -> list[int]:
    """Classes per round: ``init_classes``, then ``increment`` each; a remainder forms a last,
    smaller round (PyCIL rule, PROTOCOL.md 1.3)."""
    if not 1 <= init_classes <= num_classes:
        raise ValueError(f"init_classes must be in 1..{num_classes} (num_classes), "
                         f"got {init_classes}")
    if increment < 1:
        raise ValueError(f"increment must be >= 1, got {increment}")
    left = num_classes - init_classes
    if left and increment > left:
        raise ValueError(f"increment must be <= {left}: only {left} classes are left after a "
                         f"first round of init_classes={init_classes}; got {increment}")
    rest = [left % increment] if left % increment else []  # the last, smaller round
    return [init_classes] + [increment] * (left // increment) + rest


def _indices(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Sorted positions of ``labels`` that belong to ``classes``."""
    return np.flatnonzero(np.isin(labels, np.fromiter(classes, dtype=np.int64)))


@dataclass
class Scenario:
    """A class-incremental scenario: relabelled data, the class order and the round sizes."""

    data: ImageArrays  # relabelled: label i is original class order[i]
    order: np.ndarray  # int64 (C,)
    rounds: list[int]  # classes introduced per round

    @classmethod
    def build(cls, data: ImageArrays, *, order: int, init_classes: int, increment: int,
              class_order_seed: int | None = None) -> Scenario:
        """Relabel ``data`` by class order ``order`` (or the permutation of
        ``class_order_seed``) and split its classes into rounds."""
        rounds = round_sizes(data.num_classes, init_classes, increment)
        perm = class_order(data.num_classes, order, seed=class_order_seed)
        return cls(data=data.relabel(perm), order=perm, rounds=rounds)

    @property
    def num_rounds(self) -> int:
        """Number of rounds R."""
        return len(self.rounds)

    def seen(self, round_idx: int) -> int:
        """Classes seen after round ``round_idx`` (1-based; 0 gives 0)."""
        if not 0 <= round_idx <= self.num_rounds:
            raise ValueError(f"round_idx must be in 0..{self.num_rounds}, got {round_idx}")
        return sum(self.rounds[:round_idx])

    def new_classes(self, round_idx: int) -> range:
        """Labels introduced at round ``round_idx`` (1-based)."""
        if not 1 <= round_idx <= self.num_rounds:
            raise ValueError(f"round_idx must be in 1..{self.num_rounds}, got {round_idx}")
        return range(self.seen(round_idx - 1), self.seen(round_idx))

    def train_indices(self, classes: Iterable[int]) -> np.ndarray:
        """Sorted indices into ``data.train_x`` of the images with the given labels."""
        return _indices(self.data.train_y, classes)

    def test_indices(self, classes: Iterable[int]) -> np.ndarray:
        """Sorted indices into ``data.test_x`` of the images with the given labels."""
        return _indices(self.data.test_y, classes)
