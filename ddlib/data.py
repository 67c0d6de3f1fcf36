"""Datasets as uint8 arrays, class orders, round sizes and the class-incremental scenario.

Loaders: ``synthetic`` (the embedded default, see DESIGN.md), ``cifar100`` and ``arrays``
(a user ``.npz``). PROTOCOL.md 1.1-1.3 fixes class orders, rounds and the CIFAR-100 hierarchy.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Coarse label of each CIFAR-100 fine index 0..99 (PROTOCOL.md 1.1).
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip
CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)
DATASETS = ("synthetic", "cifar100", "arrays")


@dataclass
class ImageArrays:
    """A labelled image dataset held in memory as uint8 NHWC arrays."""

    name: str
    train_x: np.ndarray  # uint8 (N, H, W, 3)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray  # uint8 (M, H, W, 3)
    test_y: np.ndarray  # int64 (M,)
    class_names: list[str]
    coarse: np.ndarray | None  # int64 (C,): fine label -> superclass index
    coarse_names: list[str] | None
    mean: tuple[float, float, float]  # per channel, 0..1 scale
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        """Number of (fine) classes C."""
        return len(self.class_names)

    def relabel(self, order: np.ndarray) -> ImageArrays:
        """Copy in which original class ``order[i]`` becomes label ``i``; images are shared."""
        order = np.asarray(order, dtype=np.int64)
        if order.shape != (self.num_classes,) or not np.array_equal(
            np.sort(order), np.arange(self.num_classes)
        ):
            raise ValueError(f"order must be a permutation of 0..{self.num_classes - 1}")
        inverse = np.argsort(order)  # inverse[original] = new label
        return replace(
            self,
            train_y=inverse[self.train_y],
            test_y=inverse[self.test_y],
            class_names=[self.class_names[o] for o in order],
            coarse=None if self.coarse is None else self.coarse[order],
        )


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Exact per-channel mean and std of uint8 images on the 0..1 scale.

    Integer sums over chunks avoid a float copy of the whole set (1.2 GB for CIFAR-100).
    """
    flat = x.reshape(-1, 3)
    s1 = np.zeros(3, dtype=np.int64)
    s2 = np.zeros(3, dtype=np.int64)
    for i in range(0, len(flat), 1 << 18):
        chunk = flat[i : i + (1 << 18)].astype(np.int64)
        s1 += chunk.sum(axis=0)
        s2 += (chunk * chunk).sum(axis=0)
    mean = s1 / len(flat)
    std = np.sqrt(np.maximum(s2 / len(flat) - mean**2, 0.0))
    m, d = mean / 255.0, std / 255.0
    return (float(m[0]), float(m[1]), float(m[2])), (float(d[0]), float(d[1]), float(d[2]))


# ----------------------------------------------------------------------------- synthetic

# Amplitudes on the 0..1 intensity scale. The superclass pattern dominates and the fine
# pattern is weaker than the per-image clutter, so fine classes are learnable but are
# confused mostly with their superclass siblings (the effect DD targets).
_COARSE_AMP = 0.22
_FINE_AMP = 0.10
_CLUTTER_AMP = 0.07
_NOISE_AMP = 0.04


def _blobs(u: np.ndarray, v: np.ndarray, centre: np.ndarray, sigma: np.ndarray,
           colour: np.ndarray) -> np.ndarray:
    """Sum of coloured Gaussian blobs: centre (K, B, 2), sigma (K, B), colour (K, B, 3) -> (K, 3, h, w)."""
    d2 = (u[None, None] - centre[..., 0, None, None]) ** 2 + (v[None, None] - centre[..., 1, None, None]) ** 2
    g = np.exp(-d2 / (2 * sigma[..., None, None] ** 2))  # (K, B, h, w)
    return np.einsum("kbhw,kbc->kchw", g, colour)


def _grating(u: np.ndarray, v: np.ndarray, freq: np.ndarray, angle: np.ndarray,
             phase: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Coloured sinusoidal grating per row of freq/angle/phase (K,), colour (K, 3) -> (K, 3, h, w)."""
    t = np.cos(angle)[:, None, None] * u + np.sin(angle)[:, None, None] * v
    wave = np.sin(2 * np.pi * freq[:, None, None] * t + phase[:, None, None])
    return wave[:, None] * colour[:, :, None, None]


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation weights from a coarse grid to pixel centres."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def synthetic(*, num_classes: int = 100, num_superclasses: int = 20, train_per_class: int = 500,
              test_per_class: int = 100, image_size: int = 32, seed: int = 0) -> ImageArrays:
    """CIFAR-like images with a two-level class hierarchy, deterministic from ``seed``.

    Superclass s = strong smooth pattern (base colour, 3 large blobs, a low-frequency grating);
    fine class c = weaker finer pattern on top (2 small blobs, a higher-frequency grating);
    each image = random shift, contrast and brightness, smooth clutter and pixel noise.
    Fine class c belongs to superclass ``c // (num_classes // num_superclasses)``.
    """
    for pname, value, low in (("num_classes", num_classes, 1), ("num_superclasses", num_superclasses, 1),
                              ("train_per_class", train_per_class, 1), ("test_per_class", test_per_class, 1),
                              ("image_size", image_size, 8)):
        if value < low:
            raise ValueError(f"{pname} must be >= {low}, got {value}")
    if num_classes % num_superclasses:
        raise ValueError(f"num_superclasses must divide num_classes={num_classes}, got {num_superclasses}")
    rng = np.random.default_rng(seed)
    size, per_super = image_size, num_classes // num_superclasses
    shift = max(1, round(0.1 * size))  # "a few pixels", in proportion to the image
    # Pattern parameters are drawn first, in fixed amounts, so the classes themselves do not
    # depend on the image counts or the image size.
    s_base = rng.uniform(0.3, 0.7, (num_superclasses, 3))
    s_blob = (rng.uniform(0.15, 0.85, (num_superclasses, 3, 2)), rng.uniform(0.12, 0.22, (num_superclasses, 3)),
              rng.uniform(-1, 1, (num_superclasses, 3, 3)))
    s_grat = (rng.uniform(0.8, 1.6, num_superclasses), rng.uniform(0, np.pi, num_superclasses),
              rng.uniform(0, 2 * np.pi, num_superclasses), rng.uniform(-0.6, 0.6, (num_superclasses, 3)))
    f_blob = (rng.uniform(0.1, 0.9, (num_classes, 2, 2)), rng.uniform(0.05, 0.09, (num_classes, 2)),
              rng.uniform(-1, 1, (num_classes, 2, 3)))
    f_grat = (rng.uniform(2.5, 4.5, num_classes), rng.uniform(0, np.pi, num_classes),
              rng.uniform(0, 2 * np.pi, num_classes), rng.uniform(-0.6, 0.6, (num_classes, 3)))
    # Templates (channels first) on a canvas padded by `shift`, so shifted crops stay inside.
    coords = (np.arange(size + 2 * shift) - shift + 0.5) / size
    v, u = np.meshgrid(coords, coords, indexing="ij")  # v: row, u: column
    coarse_pat = s_base[:, :, None, None] + _COARSE_AMP * (_blobs(u, v, *s_blob) + _grating(u, v, *s_grat))
    fine_pat = _FINE_AMP * (_blobs(u, v, *f_blob) + _grating(u, v, *f_grat))
    superclass = np.arange(num_classes) // per_super
    templates = (coarse_pat[superclass] + fine_pat).astype(np.float32)  # (C, 3, S+2p, S+2p)
    windows = sliding_window_view(templates, (size, size), axis=(2, 3))  # (C, 3, 2p+1, 2p+1, S, S)

    n, grid = train_per_class + test_per_class, 4
    up = _upsample_matrix(size, grid).astype(np.float32)
    xs = np.empty((num_classes, n, size, size, 3), dtype=np.uint8)
    for c in range(num_classes):  # one class at a time keeps the float buffers small
        dy, dx = rng.integers(0, 2 * shift + 1, (2, n))
        crop = windows[c][:, dy, dx].transpose(1, 0, 2, 3)  # (n, 3, S, S)
        mean = templates[c].mean(axis=(1, 2))[:, None, None]
        contrast = rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32)
        brightness = (rng.normal(0, 0.05, (n, 1, 1, 1)) + rng.normal(0, 0.02, (n, 3, 1, 1))).astype(np.float32)
        clutter = up @ (rng.standard_normal((n, 3, grid, grid), dtype=np.float32) * _CLUTTER_AMP) @ up.T
        # Uniform noise of std _NOISE_AMP: several times cheaper to draw than Gaussian noise.
        noise = (rng.random((n, 3, size, size), dtype=np.float32) - 0.5) * (_NOISE_AMP * 12**0.5)
        img = mean + contrast * (crop - mean) + brightness + clutter + noise
        xs[c] = np.clip(np.rint(img * 255), 0, 255).transpose(0, 2, 3, 1)
    # Split each class's images into train/test and shuffle each split once (real datasets are
    # not stored sorted by class), with a single gather per split.
    flat = xs.reshape(num_classes * n, size, size, 3)
    first = np.arange(num_classes)[:, None] * n
    train_idx = (first + np.arange(train_per_class)).ravel()[rng.permutation(num_classes * train_per_class)]
    test_idx = (first + np.arange(train_per_class, n)).ravel()[rng.permutation(num_classes * test_per_class)]
    train_x = flat[train_idx]
    mean_rgb, std_rgb = _channel_stats(train_x)
    return ImageArrays(
        name="synthetic", train_x=train_x, train_y=train_idx // n, test_x=flat[test_idx], test_y=test_idx // n,
        class_names=[f"s{c // per_super:02d}_c{c % per_super}" for c in range(num_classes)],
        coarse=superclass.astype(np.int64), coarse_names=[f"super{s:02d}" for s in range(num_superclasses)],
        mean=mean_rgb, std=std_rgb,
    )


# ----------------------------------------------------------------------------- CIFAR-100


def _text(value: Any) -> Any:
    """Decode bytes to str (latin1); leave anything else as it is."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def _unpickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle as torchvision does (latin1), with str keys.

    The original files come from Python 2 and load with str keys; files written by
    Python 3 carry bytes keys, which are accepted too.
    """
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    return {_text(k): v for k, v in entry.items()}


def cifar100(root: str | Path, *, download: bool = False) -> ImageArrays:
    """CIFAR-100 with fine labels, class names and the fine->coarse map from the raw pickles.

    The pickles are read directly, in the format torchvision reads: torchvision's ``CIFAR100``
    insists on md5 checks of the original files and hides ``coarse_labels``; it is used only
    to download.
    """
    root = Path(root).expanduser()
    folder = root / "cifar-100-python"
    files = ("train", "test", "meta")
    if download and not all((folder / f).is_file() for f in files):
        from torchvision.datasets import CIFAR100  # slow import, needed only here
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CIFAR100.url, str(root), filename=CIFAR100.filename, md5=CIFAR100.tgz_md5)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-100 not found: looked for {', '.join(missing)} in {folder.resolve()}. "
            "Pass download=True (CLI: --download) to fetch it with torchvision, or place the "
            f"extracted 'cifar-100-python' folder in {root.resolve()}."
        )
    meta = _unpickle(folder / "meta")
    class_names = [_text(n) for n in meta["fine_label_names"]]
    coarse_names = [_text(n) for n in meta["coarse_label_names"]]
    splits = {}
    pairs = []
    for split in ("train", "test"):
        entry = _unpickle(folder / split)
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        fine = np.asarray(entry["fine_labels"], dtype=np.int64)
        splits[split] = (np.ascontiguousarray(x), fine)
        pairs.append(np.stack([fine, np.asarray(entry["coarse_labels"], dtype=np.int64)], axis=1))
    pairs = np.unique(np.concatenate(pairs), axis=0)  # distinct (fine, coarse) pairs, sorted
    expected = np.asarray(CIFAR100_COARSE, dtype=np.int64)
    if len(class_names) != 100 or not np.array_equal(pairs, np.stack([np.arange(100), expected], axis=1)):
        wrong = sorted({int(f) for f, c in pairs if not 0 <= f < 100 or c != expected[f]})
        raise ValueError(
            f"coarse_labels in {folder.resolve()} disagree with the CIFAR-100 hierarchy "
            f"(PROTOCOL.md 1.1); fine classes affected: {wrong or 'some classes are missing'}"
        )
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return ImageArrays(
        name="cifar100", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        class_names=class_names, coarse=expected, coarse_names=coarse_names, mean=CIFAR_MEAN, std=CIFAR_STD,
    )


# ----------------------------------------------------------------------------- user arrays

_REQUIRED_KEYS = ("train_x", "train_y", "test_x", "test_y")
_OPTIONAL_KEYS = ("coarse", "class_names", "coarse_names")


def _check_images(key: str, x: np.ndarray) -> None:
    """Raise ValueError unless ``x`` is a non-empty uint8 (N, H, W, 3) array."""
    if x.dtype != np.uint8:
        raise ValueError(f"{key}: images must be uint8 in 0..255, got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{key}: expected shape (N, H, W, 3) (RGB, channels last), got {x.shape}")
    if min(x.shape) == 0:
        raise ValueError(f"{key}: array is empty (shape {x.shape})")


def _check_ints(key: str, y: np.ndarray, length: int | None = None) -> None:
    """Raise ValueError unless ``y`` is a 1-D non-negative integer array (of ``length``)."""
    if y.dtype.kind not in "iu":
        raise ValueError(f"{key}: expected integer labels, got dtype {y.dtype} (floats and NaN are not labels)")
    if y.ndim != 1:
        raise ValueError(f"{key}: expected a 1-D array, got shape {y.shape}")
    if length is not None and len(y) != length:
        raise ValueError(f"{key}: expected length {length}, got {len(y)}")
    if len(y) and y.min() < 0:
        raise ValueError(f"{key}: labels must be >= 0, found {int(y.min())}")


def _names(key: str, value: np.ndarray, length: int) -> list[str]:
    """Validate a 1-D string array of ``length`` names and return it as a list."""
    if value.dtype.kind not in "US" or value.shape != (length,):
        raise ValueError(f"{key}: expected {length} strings, got dtype {value.dtype} and shape {value.shape}")
    return [_text(n) for n in value.tolist()]


def arrays(path: str | Path) -> ImageArrays:
    """Load and validate a user ``.npz`` with train_x/train_y/test_x/test_y (+ optional keys).

    Optional: ``coarse`` (fine->coarse, length C), ``class_names`` (C strings),
    ``coarse_names`` (one string per coarse class; needs ``coarse``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"arrays file not found: {path.resolve()}")
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        missing = [k for k in _REQUIRED_KEYS if k not in keys]
        if missing:
            raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; required: {', '.join(_REQUIRED_KEYS)}")
        unknown = sorted(keys - set(_REQUIRED_KEYS + _OPTIONAL_KEYS))
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}")
        data = {}
        for k in sorted(keys):
            try:
                data[k] = npz[k]
            except ValueError as err:  # object arrays need pickle, which is refused for safety
                raise ValueError(f"{k}: cannot be read without pickle; store a plain numeric or string array") from err
    for split in ("train", "test"):
        x, y = data[f"{split}_x"], data[f"{split}_y"]
        _check_images(f"{split}_x", x)
        _check_ints(f"{split}_y", y, length=len(x))
    if data["test_x"].shape[1:] != data["train_x"].shape[1:]:
        raise ValueError(f"test_x: image shape {data['test_x'].shape[1:]} differs from train_x's "
                         f"{data['train_x'].shape[1:]}")
    counts = np.bincount(data["train_y"])
    num_classes = len(counts)
    if (counts == 0).any():
        absent = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"train_y: labels must be 0..{num_classes - 1} with every class present; "
                         f"no train images for class(es) {absent}")
    unseen = np.unique(data["test_y"][data["test_y"] >= num_classes]).tolist()
    if unseen:
        raise ValueError(f"test_y: label(s) {unseen} have no train images (train classes: 0..{num_classes - 1})")
    coarse = data.get("coarse")
    coarse_names = None
    if coarse is not None:
        _check_ints("coarse", coarse, length=num_classes)
        coarse = coarse.astype(np.int64)
        if "coarse_names" in data:
            coarse_names = _names("coarse_names", data["coarse_names"], int(coarse.max()) + 1)
    elif "coarse_names" in data:
        raise ValueError("coarse_names: given without coarse (the fine->coarse map)")
    class_names = (_names("class_names", data["class_names"], num_classes) if "class_names" in data
                   else [f"class{c:03d}" for c in range(num_classes)])
    mean, std = _channel_stats(data["train_x"])
    return ImageArrays(
        name=path.stem, train_x=data["train_x"], train_y=data["train_y"].astype(np.int64),
        test_x=data["test_x"], test_y=data["test_y"].astype(np.int64), class_names=class_names,
        coarse=coarse, coarse_names=coarse_names, mean=mean, std=std,
    )


def load(name: str, *, data_dir: str | Path | None = None, download: bool = False,
         **synthetic_kwargs: int) -> ImageArrays:
    """Dispatch to a loader: ``synthetic`` (kwargs), ``cifar100`` (data_dir = root), ``arrays`` (data_dir = .npz)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if name == "synthetic":
        return synthetic(**synthetic_kwargs)
    if synthetic_kwargs:
        raise ValueError(f"{', '.join(synthetic_kwargs)}: only apply to dataset 'synthetic', not {name!r}")
    if data_dir is None:
        raise ValueError(f"data_dir is required for dataset {name!r}")
    return cifar100(data_dir, download=download) if name == "cifar100" else arrays(data_dir)


# ----------------------------------------------------------------------------- scenario


def class_order(num_classes: int, order: int) -> np.ndarray:
    """Class order ``order``: the permutation from numpy's legacy RNG seeded 1993 + order.

    Equal to ``np.random.seed(1993 + order); np.random.permutation(num_classes)`` (PROTOCOL.md
    1.2) without touching the global RNG.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    return np.random.RandomState(1993 + order).permutation(num_classes).astype(np.int64)


def round_sizes(num_classes: int, init_classes: int, increment: int) -> list[int]:
    """Classes per round: ``init_classes``, then ``increment`` each; a remainder forms a last round."""
    if not 1 <= init_classes <= num_classes:
        raise ValueError(f"init_classes must be in 1..{num_classes} (num_classes), got {init_classes}")
    left = num_classes - init_classes
    if increment < 1:
        raise ValueError(f"increment must be >= 1, got {increment}")
    if left and increment > left:
        raise ValueError(f"increment must be <= {left}, the classes left after the first round "
                         f"({num_classes} - init_classes {init_classes}), got {increment}")
    return [init_classes] + [increment] * (left // increment) + ([left % increment] if left % increment else [])


@dataclass
class Scenario:
    """A class-incremental scenario: relabelled data, the class order and the round sizes."""

    data: ImageArrays  # relabelled: label i is original class order[i]
    order: np.ndarray  # int64 (C,)
    rounds: list[int]  # classes introduced per round

    @classmethod
    def build(cls, data: ImageArrays, *, order: int, init_classes: int, increment: int) -> Scenario:
        """Relabel ``data`` by class order ``order`` and split its classes into rounds."""
        rounds = round_sizes(data.num_classes, init_classes, increment)
        perm = class_order(data.num_classes, order)
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
        return np.flatnonzero(np.isin(self.data.train_y, np.fromiter(classes, dtype=np.int64)))

    def test_indices(self, classes: Iterable[int]) -> np.ndarray:
        """Sorted indices into ``data.test_x`` of the images with the given labels."""
        return np.flatnonzero(np.isin(self.data.test_y, np.fromiter(classes, dtype=np.int64)))
