"""ImageNet-1k and UCIR's 100-class ImageNet-Subset from an ImageFolder tree (PROTOCOL 1.1).

Expected layout: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the official
validation images already sorted into class folders; they are the test set). Class index =
rank of the wnid among the sorted folder names of the dataset.

Every image is decoded once, its shorter side resized to ``image_size`` and centre-cropped
to a square; the result is one uint8 array per split, cached as ``.npz`` in ``root``. That
square is the test image, and training draws its random-resized crops from it
(`augment.random_resized_crop`). Deviation from PROTOCOL 1.5, forced by keeping the data in
memory: test images are the full centre square, not the 224/256 centre of a 256 resize, and
training crops never reach outside that square. Data that would exceed `MAX_ARRAY_BYTES`
are refused: ddlib has no streaming loader.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .data import ImageArrays
from .utils import atomic_write, progress

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000  # the tree the subset rule draws from
SUBSET_CLASSES = 100
SUBSET_SEED = 1993
MAX_ARRAY_BYTES = 64 * 2**30  # decoded uint8 images of both splits
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_CACHE_FORMAT = "1"  # bump when decoding changes, so old caches are rebuilt


def ucir_subset(wnids: Sequence[str]) -> list[str]:
    """UCIR's ImageNet-Subset (PROTOCOL 1.1): numpy's legacy RNG seeded with 1993 draws 100
    of the 1000 sorted wnids without replacement; returned sorted, so class index = rank.
    A private RandomState gives the same stream as the global one without touching it."""
    names = sorted(wnids)
    if len(names) != IMAGENET_CLASSES:
        raise ValueError(f"the subset rule draws from the {IMAGENET_CLASSES} ImageNet classes; "
                         f"got {len(names)} wnids")
    picked = np.random.RandomState(SUBSET_SEED).choice(len(names), SUBSET_CLASSES, replace=False)
    return sorted(names[i] for i in picked)


def _class_folders(split: Path) -> list[str]:
    """Sorted class folder names of one split, with a clear error for a missing/flat split."""
    if not split.is_dir():
        raise ValueError(f"ImageNet split folder not found: {split} (data_dir must hold "
                         "train/ and val/, each with one folder per class)")
    entries = [e for e in os.scandir(split) if not e.name.startswith(".")]
    folders = sorted(e.name for e in entries if e.is_dir())
    if not folders:
        loose = sum(e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES) for e in entries)
        if loose:
            raise ValueError(f"{split} holds {loose} images directly, not class folders: sort "
                             f"them into {split}/<wnid>/ (e.g. with the ILSVRC2012 devkit's "
                             "validation ground truth)")
        raise ValueError(f"no class folders in {split}")
    return folders


def _images(folder: Path) -> list[str]:
    """Sorted image file names in one class folder; a folder without images is an error."""
    names = sorted(e.name for e in os.scandir(folder)
                   if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
                   and not e.name.startswith("."))
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return names


def _decode(path: Path, size: int) -> np.ndarray:
    """Shorter side -> `size` (bilinear, antialiased), centre square crop; uint8 (size, size, 3)."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size
            img = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)  # torchvision's rounding
    return np.asarray(img.crop((left, top, left + size, top + size)))


def _decode_all(paths: list[Path], size: int, desc: str) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    # PIL releases the GIL while decoding and resizing, so threads scale.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = pool.map(lambda p: _decode(p, size), paths)
        for i, image in enumerate(progress(decoded, total=len(paths), desc=desc)):
            out[i] = image
    return out


def imagenet(root: str | Path, *, subset: bool, image_size: int = 224) -> ImageArrays:
    """ImageNet-1k (``subset=False``) or UCIR's ImageNet-Subset (``subset=True``) from the
    ImageFolder tree at ``root``, as ``image_size`` squares (see the module docstring).

    For the subset, a tree of all 1000 classes goes through `ucir_subset`; a tree of exactly
    100 class folders is taken as the subset already extracted.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"ImageNet root not found: {root} (data_dir must be the folder "
                         "holding train/ and val/)")
    train_dir, val_dir = root / "train", root / "val"
    classes, val_classes = _class_folders(train_dir), _class_folders(val_dir)
    if classes != val_classes:
        missing = sorted(set(classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(classes))
        raise ValueError(f"class folders of {val_dir} do not match {train_dir}: "
                         f"{len(missing)} missing in val/ {missing[:5]}, "
                         f"{len(extra)} not in train/ {extra[:5]}")
    if subset and len(classes) != SUBSET_CLASSES:
        if len(classes) != IMAGENET_CLASSES:
            raise ValueError(f"subset=True (imagenet100) needs the {IMAGENET_CLASSES} ImageNet "
                             f"classes or exactly the {SUBSET_CLASSES} subset classes in "
                             f"{train_dir}; found {len(classes)} class folders")
        classes = ucir_subset(classes)
    files = {split: [(c, name) for c in classes for name in _images(root / split / c)]
             for split in ("train", "val")}
    count = len(files["train"]) + len(files["val"])
    size_bytes = count * image_size**2 * 3
    if size_bytes > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{count} images at image_size={image_size} would take {size_bytes / 2**30:.0f} GiB "
            f"in memory (limit {MAX_ARRAY_BYTES / 2**30:.0f} GiB): ImageNet-1k needs a smaller "
            "image_size, or a streaming loader, which ddlib does not have yet")
    fingerprint = hashlib.sha256(repr((_CACHE_FORMAT, files)).encode()).hexdigest()
    kind = "subset" if subset else "full"
    cache = root / f"ddlib-cache-{kind}-{image_size}.npz"
    arrays = _read_cache(cache, fingerprint)
    if arrays is None:
        index = {c: i for i, c in enumerate(classes)}
        arrays = {"fingerprint": np.array(fingerprint)}
        for split, key in (("train", "train"), ("val", "test")):
            arrays[f"{key}_x"] = _decode_all([root / split / c / n for c, n in files[split]],
                                             image_size, desc=f"decoding {split}/")
            arrays[f"{key}_y"] = np.array([index[c] for c, _ in files[split]], dtype=np.int64)
        try:
            atomic_write(cache, lambda f: np.savez(f, **arrays), "the ImageNet cache ")
        except OSError as err:  # a read-only dataset folder still works, only slower
            warnings.warn(f"{err}; the images will be decoded again next time", stacklevel=2)
    return ImageArrays("imagenet100" if subset else "imagenet", arrays["train_x"],
                       arrays["train_y"], arrays["test_x"], arrays["test_y"],
                       class_names=list(classes), coarse=None, coarse_names=None,
                       mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _read_cache(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The cached arrays when they were decoded from exactly the current file list."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["fingerprint"]) != fingerprint:
                return None
            return {k: npz[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:  # damaged
        warnings.warn(f"ignoring unreadable cache {path}: {err}", stacklevel=3)
        return None
