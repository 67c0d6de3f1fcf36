"""Datasets as uint8 arrays and their loaders.

Loaders: ``synthetic`` (the embedded default, see DESIGN.md), ``cifar100`` and ``arrays``
(a user ``.npz``); ImageNet lives in ``ddlib.imagenet``, class orders and rounds in
``ddlib.scenario``. PROTOCOL.md 1.1 fixes the CIFAR-100 hierarchy.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
import zlib
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
# Figure 1 (PROTOCOL 5.2): CIFAR-100 indices of 'baby', the class followed, and of the
# classes whose arrival it watches.
CIFAR100_FIGURE1 = {"baby": 2, "boy": 11, "girl": 35, "man": 46, "woman": 98}
CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)


RGB = tuple[float, float, float]


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
    mean: RGB  # per channel, 0..1 scale
    std: RGB

    @property
    def num_classes(self) -> int:
        """Number of (fine) classes C."""
        return len(self.class_names)

    def relabel(self, order: np.ndarray) -> ImageArrays:
        """Copy in which original class ``order[i]`` becomes label ``i``; images are shared."""
        order = np.asarray(order, dtype=np.int64)
        if not np.array_equal(np.sort(order), np.arange(self.num_classes)):
            raise ValueError(f"order must be a permutation of 0..{self.num_classes - 1}")
        inverse = np.argsort(order)  # inverse[original label] = new label
        return replace(self, train_y=inverse[self.train_y], test_y=inverse[self.test_y],
                       class_names=[self.class_names[o] for o in order],
                       coarse=None if self.coarse is None else self.coarse[order])


def _channel_stats(x: np.ndarray) -> tuple[RGB, RGB]:
    """Exact per-channel mean and std of uint8 images, on the 0..1 scale."""
    flat, s1, s2 = x.reshape(-1, 3), np.zeros(3, np.int64), np.zeros(3, np.int64)
    for i in range(0, len(flat), 1 << 18):  # integer chunks: no float copy of the whole set
        chunk = flat[i : i + (1 << 18)].astype(np.int64)
        s1, s2 = s1 + chunk.sum(axis=0), s2 + (chunk * chunk).sum(axis=0)
    mean = s1 / len(flat)
    std = np.sqrt(np.maximum(s2 / len(flat) - mean**2, 0.0))
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())  # type: ignore[return-value]


# ----------------------------------------------------------------------------- synthetic

# Amplitudes on the 0..1 intensity scale. The superclass sets the base colour, three large
# blobs and a slow grating; the fine class adds two blobs (2-3 px at 16x16) and a grating near
# its superclass's texture. A share `COARSE_ONLY` of each class's images show only their
# superclass's pattern: among siblings they are ambiguous, as CIFAR-100 has images where only
# the superclass is recognisable, so a converged network still confuses siblings and joint
# training on 100 classes in superclasses of 5 is capped at 1 - 0.8 * 0.3 = 76 %.
# Calibrated with `studies/generator.py` on the `cpu` profile's network (ResNet-32, half width,
# 16x16, 100 images per class) trained to convergence, never with an incremental method or DD:
# version 2 (fine amplitude 0.14, no superclass-only images) reached 97.4 % on all 100
# classes at once and 99.4 % on 20 after 192 epochs, train and test alike (CIFAR-100 with
# ResNet-32: about 70 % and 81 %), and needed over 96 epochs to get there. A stronger fine
# pattern (0.35) is learnt within 12 to 24 epochs; the superclass-only images then set the
# ceiling: 70.8 % on all 100 classes after 12 epochs, 88 % on 20 after 24.
_COARSE_AMP, _NOISE_AMP = 0.12, 0.05
FINE_AMP = 0.35  # public, as COARSE_ONLY: the convergence page and the generator study read both
_CLUTTER_AMP = {4: 0.07, 8: 0.05}  # smooth clutter: grid size -> amplitude
_FINE_SIGMA = (0.12, 0.2)  # fine blob radius, in image widths
_ANGLE_JITTER = 0.6  # std (radians) of a fine grating's angle around its superclass texture
COARSE_ONLY = 0.3  # share of each class's images that show only their superclass


def _pattern(u: np.ndarray, v: np.ndarray, centre: np.ndarray, sigma: np.ndarray,
             blob_rgb: np.ndarray, freq: np.ndarray, angle: np.ndarray, phase: np.ndarray,
             wave_rgb: np.ndarray) -> np.ndarray:
    """K patterns (K, 3, h, w), each B coloured Gaussian blobs plus one coloured grating.

    centre (K, B, 2), sigma (K, B), blob_rgb (K, B, 3); freq, angle, phase (K,); wave_rgb (K, 3).
    """
    d2 = (u - centre[..., :1, None]) ** 2 + (v - centre[..., 1:, None]) ** 2  # (K, B, h, w)
    blobs = np.einsum("kbhw,kbc->kchw", np.exp(-d2 / (2 * sigma[..., None, None] ** 2)), blob_rgb)
    t = np.cos(angle)[:, None, None] * u + np.sin(angle)[:, None, None] * v
    wave = np.sin(2 * np.pi * freq[:, None, None] * t + phase[:, None, None])
    return blobs + wave[:, None] * wave_rgb[:, :, None, None]


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation weights from a coarse grid to pixel centres."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)  # pixel centres in grid units
    weights = [np.interp(pos, np.arange(n_in), e) for e in np.eye(n_in)]
    return np.stack(weights, axis=1).astype(np.float32)


def synthetic(*, num_classes: int = 100, num_superclasses: int = 20, train_per_class: int = 500,
              test_per_class: int = 100, image_size: int = 32, seed: int = 0) -> ImageArrays:
    """CIFAR-like images with a two-level class hierarchy, deterministic from ``seed``.

    Superclass = base colour, 3 large blobs and a low-frequency grating; fine class = a
    pattern on top (2 smaller blobs, a grating whose orientation and
    frequency vary around a texture shared by its siblings), absent from a share of the images,
    which show only their superclass; image = random shift, contrast and brightness, smooth
    clutter and pixel noise. Class c is in superclass c // (C / S).
    """
    for pname, value, low in (("num_classes", num_classes, 1),
                              ("num_superclasses", num_superclasses, 1),
                              ("train_per_class", train_per_class, 1),
                              ("test_per_class", test_per_class, 1), ("image_size", image_size, 8)):
        if value < low:
            raise ValueError(f"{pname} must be >= {low}, got {value}")
    if num_classes % num_superclasses:
        raise ValueError(f"num_superclasses={num_superclasses} must divide "
                         f"num_classes={num_classes}")
    rng = np.random.default_rng(seed)
    size, n_cls, n_sup = image_size, num_classes, num_superclasses
    per = n_cls // n_sup
    # Pattern parameters come first, in fixed amounts, so the classes do not depend on the
    # image counts or the image size.
    base = rng.uniform(0.3, 0.7, (n_sup, 3))
    coarse_par = (rng.uniform(0.15, 0.85, (n_sup, 3, 2)), rng.uniform(0.12, 0.22, (n_sup, 3)),
                  rng.uniform(-1, 1, (n_sup, 3, 3)), rng.uniform(0.8, 1.6, n_sup),
                  rng.uniform(0, np.pi, n_sup), rng.uniform(0, 2 * np.pi, n_sup),
                  rng.uniform(-0.6, 0.6, (n_sup, 3)))
    texture_freq, texture_angle = rng.uniform(2.5, 4, n_sup), rng.uniform(0, np.pi, n_sup)
    fine_par = (rng.uniform(0.1, 0.9, (n_cls, 2, 2)), rng.uniform(*_FINE_SIGMA, (n_cls, 2)),
                rng.uniform(-1, 1, (n_cls, 2, 3)),
                texture_freq.repeat(per) * rng.uniform(0.8, 1.25, n_cls),
                texture_angle.repeat(per) + rng.normal(0, _ANGLE_JITTER, n_cls),
                rng.uniform(0, 2 * np.pi, n_cls), rng.uniform(-0.6, 0.6, (n_cls, 3)))
    # Templates (channels first) on a canvas padded by `shift`, so shifted crops stay inside.
    shift = max(1, round(0.1 * size))  # "a few pixels", in proportion to the image
    coords = (np.arange(size + 2 * shift) - shift + 0.5) / size
    v, u = np.meshgrid(coords, coords, indexing="ij")  # v: row, u: column
    superclass = np.arange(n_cls, dtype=np.int64) // per
    coarse_pat = base[:, :, None, None] + _COARSE_AMP * _pattern(u, v, *coarse_par)
    templates = coarse_pat[superclass] + FINE_AMP * _pattern(u, v, *fine_par)
    templates = templates.astype(np.float32)  # (C, 3, S + 2p, S + 2p)
    windows = sliding_window_view(templates, (size, size), axis=(2, 3))  # (C, 3, 2p+1, 2p+1, S, S)
    coarse_windows = sliding_window_view(coarse_pat.astype(np.float32), (size, size), axis=(2, 3))

    n = train_per_class + test_per_class
    ups = {grid: _upsample_matrix(size, grid) for grid in _CLUTTER_AMP}
    xs = np.empty((n_cls, n, size, size, 3), dtype=np.uint8)
    for c in range(n_cls):  # one class at a time keeps the float buffers small
        dy, dx = rng.integers(0, 2 * shift + 1, (2, n))
        crop = windows[c][:, dy, dx].transpose(1, 0, 2, 3)  # (n, 3, S, S)
        if COARSE_ONLY:  # module constant: studies/generator.py varies it
            plain = rng.random(n) < COARSE_ONLY
            crop[plain] = coarse_windows[superclass[c]][:, dy[plain], dx[plain]].transpose(1, 0, 2, 3)
        mean = templates[c].mean(axis=(1, 2))[:, None, None]
        contrast = rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32)
        bright = rng.normal(0, 0.05, (n, 1, 1, 1)) + rng.normal(0, 0.02, (n, 3, 1, 1))
        clutter = sum(ups[g] @ (amp * rng.standard_normal((n, 3, g, g), np.float32)) @ ups[g].T
                      for g, amp in _CLUTTER_AMP.items())
        # Uniform noise of std _NOISE_AMP: several times cheaper to draw than Gaussian noise.
        noise = rng.random((n, 3, size, size), np.float32) - 0.5
        noise *= np.float32(_NOISE_AMP * 12**0.5)
        img = mean + contrast * (crop - mean) + bright.astype(np.float32) + clutter + noise
        xs[c] = np.clip(np.rint(img * 255), 0, 255).transpose(0, 2, 3, 1)
    # Shuffle each split once (real datasets are not sorted by class), one gather per split.
    flat, first = xs.reshape(n_cls * n, size, size, 3), np.arange(n_cls)[:, None] * n
    train_idx = rng.permutation((first + np.arange(train_per_class)).ravel())
    test_idx = rng.permutation((first + np.arange(train_per_class, n)).ravel())
    train_x = flat[train_idx]
    mean_rgb, std_rgb = _channel_stats(train_x)
    return ImageArrays(
        "synthetic", train_x, train_idx // n, flat[test_idx], test_idx // n,
        class_names=[f"s{c // per:02d}_c{c % per}" for c in range(n_cls)], coarse=superclass,
        coarse_names=[f"super{s:02d}" for s in range(n_sup)], mean=mean_rgb, std=std_rgb)


# ----------------------------------------------------------------------------- CIFAR-100


def _text(value: Any) -> Any:
    """Decode bytes (latin1, as torchvision does); leave anything else as it is."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def _unpickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle with str keys: the originals (Python 2) load with str keys under
    latin1, files written by Python 3 carry bytes keys; both are accepted."""
    with open(path, "rb") as f:
        return {_text(k): v for k, v in pickle.load(f, encoding="latin1").items()}


def cifar100(root: str | Path, *, download: bool = False) -> ImageArrays:
    """CIFAR-100 from ``root/cifar-100-python``, with the fine->coarse map and class names.

    The pickles are read here in the format torchvision reads: torchvision's ``CIFAR100``
    insists on the original files' md5 and drops ``coarse_labels``; it is used to download.
    """
    root = Path(root).expanduser()
    folder = root / "cifar-100-python"
    files = ("train", "test", "meta")
    if download and not all((folder / f).is_file() for f in files):
        from torchvision.datasets import CIFAR100  # slow import, needed only here
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CIFAR100.url, str(root), filename=CIFAR100.filename,
                                     md5=CIFAR100.tgz_md5)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-100 not found: looked for {', '.join(missing)} in {folder.resolve()}. "
            "Pass download=True (CLI: --download) to fetch it with torchvision, or place the "
            f"extracted 'cifar-100-python' folder in {root.resolve()}.")
    meta = _unpickle(folder / "meta")
    splits, pairs = [], []
    for split in ("train", "test"):
        entry = _unpickle(folder / split)
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # RGB planes
        fine = np.asarray(entry["fine_labels"], dtype=np.int64)
        splits += [np.ascontiguousarray(x.transpose(0, 2, 3, 1)), fine]
        pairs.append(np.stack([fine, np.asarray(entry["coarse_labels"], dtype=np.int64)], 1))
    found = np.unique(np.concatenate(pairs), axis=0)  # distinct (fine, coarse) pairs, sorted
    expected = np.asarray(CIFAR100_COARSE, dtype=np.int64)
    if not np.array_equal(found, np.stack([np.arange(100), expected], 1)):
        wrong = sorted({int(f) for f, c in found if not 0 <= f < 100 or c != expected[f]})
        raise ValueError(f"coarse_labels in {folder.resolve()} disagree with the CIFAR-100 "
                         f"hierarchy (PROTOCOL.md 1.1) for fine classes {wrong or 'missing'}")
    return ImageArrays("cifar100", *splits, [_text(n) for n in meta["fine_label_names"]],
                       coarse=expected, coarse_names=[_text(n) for n in meta["coarse_label_names"]],
                       mean=CIFAR_MEAN, std=CIFAR_STD)


# ----------------------------------------------------------------------------- user arrays

_NPZ_KEYS = ("train_x", "train_y", "test_x", "test_y", "coarse", "class_names")  # 4 required


def _check_images(key: str, x: np.ndarray) -> None:
    """Raise ValueError unless ``x`` is a non-empty uint8 (N, H, W, 3) array."""
    if x.dtype != np.uint8:
        raise ValueError(f"{key}: images must be uint8 in 0..255, got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{key}: expected shape (N, H, W, 3), RGB channels last; got {x.shape}")
    if x.size == 0:
        raise ValueError(f"{key}: array is empty (shape {x.shape})")


def _check_ints(key: str, y: np.ndarray, length: int) -> None:
    """Raise ValueError unless ``y`` is a 1-D non-negative integer array of ``length``."""
    if y.dtype.kind not in "iu":
        raise ValueError(f"{key}: expected integer labels, got dtype {y.dtype} (no floats/NaN)")
    if y.shape != (length,):
        raise ValueError(f"{key}: expected shape ({length},), got {y.shape}")
    if y.min() < 0:
        raise ValueError(f"{key}: labels must be >= 0, found {int(y.min())}")


def arrays(path: str | Path) -> ImageArrays:
    """A user ``.npz``: train_x, train_y, test_x, test_y; optional coarse (fine->coarse, length
    C) and class_names (C strings). Everything is validated; errors name the key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"arrays file not found: {path.resolve()}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:  # text, pickle, empty, cut
        raise ValueError(f"{path}: not a readable .npz archive (write it with numpy.savez): "
                         f"{type(err).__name__}: {err}") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds one array (.npy), not a .npz archive of named arrays "
                         "(write it with numpy.savez)")
    with npz:
        missing = [k for k in _NPZ_KEYS[:4] if k not in npz.files]
        unknown = [k for k in npz.files if k not in _NPZ_KEYS]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing} (unknown key(s) {unknown}); "
                             f"expected {', '.join(_NPZ_KEYS[:4])}, optionally coarse, class_names")
        if unknown:  # notes beside the data (a `meta` key, say) are common: not an error
            warnings.warn(f"{path}: ignoring key(s) {unknown}; ddlib reads "
                          f"{', '.join(_NPZ_KEYS)}", stacklevel=2)
        d = {}
        for k in (k for k in npz.files if k in _NPZ_KEYS):
            try:
                d[k] = npz[k]
            except ValueError as err:  # object arrays need pickle, refused for safety
                raise ValueError(f"{k}: stored as Python objects or damaged ({err}); save a "
                                 "plain numeric or string array") from err
            except (OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as err:
                raise ValueError(f"{path}: {k} is damaged ({type(err).__name__}: {err})") from err
            if not isinstance(d[k], np.ndarray):  # a member that is not in .npy format
                raise ValueError(f"{path}: {k} is not a .npy array inside the archive")
    for split in ("train", "test"):
        _check_images(f"{split}_x", d[f"{split}_x"])
        _check_ints(f"{split}_y", d[f"{split}_y"], len(d[f"{split}_x"]))
    if d["test_x"].shape[1:] != d["train_x"].shape[1:]:
        raise ValueError(f"test_x: images of shape {d['test_x'].shape[1:]}, but train_x has "
                         f"{d['train_x'].shape[1:]}")
    present = np.unique(d["train_y"])
    num_classes = int(present[-1]) + 1
    if len(present) != num_classes:
        raise ValueError(f"train_y: labels must be 0..C-1 with train images of every class; found "
                         f"{len(present)} distinct labels up to {num_classes - 1}")
    if d["test_y"].max() >= num_classes:
        unseen = np.unique(d["test_y"][d["test_y"] >= num_classes]).tolist()
        raise ValueError(f"test_y: label(s) {unseen} are not train classes (0..{num_classes - 1})")
    coarse = d.get("coarse")
    if coarse is not None:
        _check_ints("coarse", coarse, num_classes)
        if coarse.max() >= num_classes:  # more superclasses than classes: not a hierarchy
            raise ValueError(f"coarse: superclass indices must be < {num_classes} (the number "
                             f"of classes), found {int(coarse.max())}")
    names = d.get("class_names", np.array([f"class{c:03d}" for c in range(num_classes)]))
    if names.dtype.kind != "U" or names.shape != (num_classes,):
        raise ValueError(f"class_names: expected {num_classes} strings, got dtype {names.dtype} "
                         f"and shape {names.shape}")
    mean, std = _channel_stats(d["train_x"])
    if min(std) == 0:  # normalisation divides by the channel's std
        raise ValueError(f"train_x: channel {std.index(min(std))} is constant (std 0); "
                         "per-channel normalisation needs varying pixels")
    return ImageArrays(
        path.stem, d["train_x"], d["train_y"].astype(np.int64), d["test_x"],
        d["test_y"].astype(np.int64), class_names=names.tolist(),
        coarse=None if coarse is None else coarse.astype(np.int64),
        coarse_names=None if coarse is None else [f"super{s:02d}" for s in range(coarse.max() + 1)],
        mean=mean, std=std)
