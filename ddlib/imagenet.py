"""ImageNet-1k and UCIR's 100-class ImageNet-Subset from an ImageFolder tree (PROTOCOL 1.1).

Expected layout: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the official
validation images already sorted into class folders; they are the test set). Class index =
rank of the wnid among the sorted folder names of the dataset.

Every image is decoded once into a uint8 ``.npy`` cache (a folder ``ddlib-cache-*`` in
``root``, or under ``~/.cache/ddlib`` when ``root`` is read-only) that later loads are
memory-mapped from, so ImageNet-1k (193 GB at 224) needs disk, not memory. One process
decodes a cache: the one holding its lock file on the cache's disk; the others that see that
disk (torchrun's ranks on every node sharing it, a second notebook) wait on the lock, then
read the finished cache.

Test images follow PROTOCOL 1.5 exactly: shorter side to 256/224 of ``image_size``, centre
crop ``image_size``. Training images are the shorter side resized to ``image_size`` and
centre-cropped to a square; training draws its random-resized crops from that square
(`augment.random_resized_crop`), so, unlike torchvision's crop of the full image, a crop
never reaches beyond it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .data import ImageArrays
from .utils import progress

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000  # the tree the subset rule draws from
SUBSET_CLASSES = 100
SUBSET_SEED = 1993
TEST_RESIZE = 256 / 224  # test: shorter side to 256, centre crop 224 (PROTOCOL 1.5)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_CACHE_FORMAT = "2"  # bump when decoding changes, so old caches are rebuilt
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
# A partial folder of another host (whose processes this one cannot see) is a crashed
# decode's once nothing in it changed for this long (a live decode keeps writing into it).
STALE_PARTIAL_S = 24 * 3600


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


def _decode(path: Path, size: int, resize: int | None = None) -> np.ndarray:
    """Shorter side -> `resize` (default `size`; bilinear, antialiased), centre crop of
    `size`; uint8 (size, size, 3)."""
    resize = resize or size
    try:
        with Image.open(path) as img:
            img.draft("RGB", (resize, resize))  # JPEG: decode at a reduced scale still >= resize
            img = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    w, h = img.size
    scale = resize / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)  # torchvision's rounding
    return np.asarray(img.crop((left, top, left + size, top + size)))


def _decode_into(out: np.ndarray, paths: list[Path], resize: int, desc: str) -> None:
    """Decode `paths` into the rows of `out` (N, size, size, 3), e.g. a memory-mapped file."""
    size = out.shape[1]
    # PIL releases the GIL while decoding and resizing, so threads scale.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = pool.map(lambda p: _decode(p, size, resize), paths)
        for i, image in enumerate(progress(decoded, total=len(paths), desc=desc)):
            out[i] = image


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
    fingerprint = hashlib.sha256(repr((_CACHE_FORMAT, files)).encode()).hexdigest()
    kind = "subset" if subset else "full"
    cache = _cache_root(root) / f"ddlib-cache-{kind}-{image_size}"
    arrays = _read_cache(cache, fingerprint)
    if arrays is None:
        with _decoder_lock(cache):
            # whoever held the lock before may have just written it
            arrays = _read_cache(cache, fingerprint)
            if arrays is None:
                arrays = _write_cache(cache, fingerprint, root, classes, files, image_size)
    return ImageArrays("imagenet100" if subset else "imagenet", arrays["train_x"],
                       arrays["train_y"], arrays["test_x"], arrays["test_y"],
                       class_names=list(classes), coarse=None, coarse_names=None,
                       mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _cache_root(root: Path) -> Path:
    """Where the decoded arrays of `root` live: `root` itself when writable, else a folder
    under the user's cache named after `root` (a shared, read-only dataset still works)."""
    if os.access(root, os.W_OK):
        return root
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ddlib"
    return base / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def _decode_splits(out: Path, root: Path, classes: list[str],
                   files: dict[str, list[tuple[str, str]]], size: int) -> None:
    """train_x/train_y/test_x/test_y .npy files in `out`; images are written straight into
    memory-mapped files, so no split is ever held in memory whole."""
    index = {c: i for i, c in enumerate(classes)}
    resizes = {"train": size, "val": round(size * TEST_RESIZE)}
    for split, key in (("train", "train"), ("val", "test")):
        paths = [root / split / c / n for c, n in files[split]]
        images = np.lib.format.open_memmap(out / f"{key}_x.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(paths), size, size, 3))
        _decode_into(images, paths, resizes[split], desc=f"decoding {split}/")
        images.flush()
        del images  # closes the map
        np.save(out / f"{key}_y.npy", np.array([index[c] for c, _ in files[split]],
                                               dtype=np.int64))


def _owner() -> str:
    """This process, as named in lock files and partial folders: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.contextmanager
def _decoder_lock(cache: Path) -> Iterator[None]:
    """Hold the lock that makes one process the decoder of `cache`. The lock lives on the
    cache's disk because the disk, not the rank, decides who shares a cache: nodes on a
    shared file system share one, nodes with local disks each need their own, and ranks
    cannot tell which. Others wait blocked on the lock, not in a collective, so an hours-long
    decode meets no process-group timeout; the kernel releases the lock of a crashed decoder."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_name(f".{cache.name}.lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            warnings.warn(f"waiting for {holder} to finish decoding {cache}", stacklevel=4)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:  # e.g. Lustre mounted without flock
            warnings.warn(f"{cache.parent} does not lock files ({err}): every process sharing "
                          "it decodes, and the first cache finished is kept", stacklevel=4)
            yield
            return
        handle.seek(0)
        handle.truncate()
        handle.write(_owner())
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_abandoned(partial: Path) -> bool:
    """Whether `partial` (named ...partial-<host>-<pid>) is a crashed decode's: its process
    is gone (this host), or nothing in it changed for STALE_PARTIAL_S (another host)."""
    host, _, pid = partial.name.split(".partial-", 1)[1].rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        return not _running(int(pid))
    with contextlib.suppress(FileNotFoundError):
        changed = max(p.stat().st_mtime for p in [partial, *partial.iterdir()])
        return time.time() - changed > STALE_PARTIAL_S
    return False


def _running(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _read_cache(cache: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The cached arrays (images memory-mapped) when they were decoded from exactly the
    current file list; None when missing, stale or damaged."""
    stamp = cache / "fingerprint"
    if not stamp.is_file() or stamp.read_text() != fingerprint:
        return None
    try:
        return {k: np.load(cache / f"{k}.npy", mmap_mode="r" if k.endswith("_x") else None,
                           allow_pickle=False) for k in _ARRAYS}
    except (OSError, ValueError, EOFError) as err:  # damaged
        warnings.warn(f"ignoring unreadable cache {cache}: {err}", stacklevel=3)
        return None


def _write_cache(cache: Path, fingerprint: str, root: Path, classes: list[str],
                 files: dict[str, list[tuple[str, str]]], size: int) -> dict[str, np.ndarray]:
    """Decode both splits into a fresh cache folder, renamed into place when complete (the
    fingerprint is written last), and return its arrays; a valid cache that another decoder
    (on a file system whose locks do not reach across hosts) renamed into place first is
    taken instead. Checks the disk space first, after removing what it replaces: a stale or
    damaged cache, and folders of crashed decodes (never a live decoder's)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache, ignore_errors=True)
    for left in cache.parent.glob(f".{cache.name}.partial-*"):  # up to 193 GB each
        if _is_abandoned(left):
            shutil.rmtree(left, ignore_errors=True)
    count = len(files["train"]) + len(files["val"])
    need = count * size * size * 3
    free = shutil.disk_usage(cache.parent).free
    if need > free:
        raise ValueError(f"decoding {count} images at image_size={size} needs "
                         f"{need / 2**30:.1f} GiB in {cache.parent}, which has "
                         f"{free / 2**30:.1f} GiB free; free space or choose a smaller "
                         "image_size")
    if cache.parent != root:
        warnings.warn(f"{root} is read-only: caching the decoded images in {cache}",
                      stacklevel=3)
    partial = cache.with_name(f".{cache.name}.partial-{_owner()}")
    partial.mkdir()
    try:
        _decode_splits(partial, root, classes, files, size)
    except BaseException:  # a broken image, Ctrl-C: do not leave gigabytes behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / "fingerprint").write_text(fingerprint)
    try:
        os.replace(partial, cache)
    except OSError:  # a non-empty folder is there: another decoder's
        theirs = _read_cache(cache, fingerprint)
        if theirs is not None:
            shutil.rmtree(partial, ignore_errors=True)
            return theirs
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(partial, cache)
    arrays = _read_cache(cache, fingerprint)
    if arrays is None:
        raise OSError(f"the ImageNet cache {cache} could not be read back after writing")
    return arrays
