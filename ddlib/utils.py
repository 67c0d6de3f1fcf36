"""Small shared helpers: seeding, device choice, paths, atomic writes, progress bars."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def round_seed(seed: int, round_idx: int) -> int:
    """Seed of one round, so a run resumed at round r matches an uninterrupted one."""
    return seed * 1000 + round_idx


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def project_root(start: Path | None = None) -> Path | None:
    """The nearest parent holding `_config.yml` and `ddlib/`, or None (e.g. in Colab)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file() and (folder / "ddlib").is_dir():
            return folder
    return None


def resolve_path(path: str | Path) -> Path:
    """Relative paths are taken from the project root when there is one: papermill, nbval
    and Jupyter Book each run notebooks from a different working directory."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return (project_root() or Path.cwd()) / path


def display_path(path: str | Path) -> str:
    """`path` as printed: relative to the project root when inside it (so logs and committed
    notebooks do not show the build machine's folders), else as given."""
    root = project_root()
    if root is not None:
        with contextlib.suppress(ValueError):
            return str(Path(path).resolve().relative_to(root))
    return str(path)


def write_error(path: Path, err: OSError, what: str = "") -> OSError:
    """`err` (disk full, no permission, a file where a folder should be) as an OSError of the
    same errno whose message names `path`, the file that could not be written."""
    message = f"could not write {what}{path}: {err.strerror or err}"
    return OSError(err.errno, message) if err.errno else OSError(message)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], what: str = "") -> None:
    """Call `write` on a temp file in `path`'s folder, fsync, rename over `path`: the file is
    never half-written. An OSError names `path`; the temp file is removed on any failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise write_error(path, err, what) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err, what) from err
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename: never half-written. Disk
    and permission errors are OSErrors naming `path`. A file that already holds exactly this
    JSON is left alone, so its mtime (part of the book's cache key) only moves on change."""
    text = json.dumps(payload, indent=1).encode()  # a payload that is not JSON fails here
    if path.is_file() and path.read_bytes() == text:
        return
    atomic_write(path, lambda f: f.write(text))


def progress(iterable: Iterable, *, enabled: bool = True, **kwargs: Any):
    """tqdm.auto bar; off when `enabled` is False or TQDM_DISABLE=1 (tqdm.notebook ignores it)."""
    from tqdm.auto import tqdm

    disable = not enabled or os.environ.get("TQDM_DISABLE") == "1"
    return tqdm(iterable, disable=disable, leave=False, **kwargs)


INT_LIMIT = 2**31 - 1  # every integer knob (epochs, sizes, seeds, k) fits in an int32


def int_flag(text: str, low: int = -INT_LIMIT, high: int = INT_LIMIT) -> int:
    """An integer flag; argparse reports a non-integer or one outside low..high (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is out of range {low}..{high}")
    return value
