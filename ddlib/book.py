"""What the book's pages need besides the experiments: glue, the book's setting, its cache.

- `glue(values)`: MyST-NB glue of a page's key numbers (a no-op where myst_nb is missing,
  e.g. Colab), so prose can quote them with {glue:text}`key:.1f`.
- `setting(profile, dataset)`: which profile and dataset an exhibit page shows. `make book`
  exports DDBOOK_PROFILE and DDBOOK_DATASETS for the whole build; explicit values win; the
  fallback is the committed default (`smoke`, `synthetic`), which is what nbval compares.
- `refresh_cache(...)`: Jupyter Book's execution cache is keyed on code cells only, so it
  misses new results, a changed `ddlib` and another profile (jupyter-book issue 1633);
  `make book` calls this to drop the cache when any of them changed.

`main` is the command line of that step (see the Makefile's `book` target).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from .utils import project_root, resolve_path

PROFILE_VAR, DATASETS_VAR = "DDBOOK_PROFILE", "DDBOOK_DATASETS"


def glue(values: dict[str, Any]) -> None:
    """Glue every `key: value` for this page's prose (hidden outputs)."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab or plain Jupyter: the prose shows the roles, nothing breaks
        return
    for key, value in values.items():
        myst_glue(key, value, display=False)


def setting(profile: str | None = None, dataset: str | None = None) -> dict[str, str]:
    """The profile and dataset a page shows: the given ones, else the book build's
    (DDBOOK_PROFILE, first of DDBOOK_DATASETS), else `smoke` on `synthetic`."""
    datasets = [d for d in os.environ.get(DATASETS_VAR, "").split(",") if d.strip()]
    return {"profile": profile or os.environ.get(PROFILE_VAR) or "smoke",
            "dataset": dataset or (datasets[0].strip() if datasets else "synthetic")}


def cache_key(*, profile: str, datasets: str, results_dir: str | Path = "results") -> str:
    """Hash of what executed book pages depend on beyond their code: the build's profile
    and datasets, the `ddlib` sources, and the list of result files (path, size, mtime)."""
    root = project_root() or Path.cwd()
    digest = hashlib.sha256(f"{profile}|{datasets}".encode())
    for path in sorted((root / "ddlib").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    store = resolve_path(results_dir)
    if store.is_dir():
        for path in sorted(store.rglob("*.json")):
            stat = path.stat()
            digest.update(f"{path.relative_to(store)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def refresh_cache(build_dir: str | Path = "_build", **key: Any) -> bool:
    """Delete `build_dir`/.jupyter_cache when `cache_key(**key)` changed since the last
    build; return whether it was deleted."""
    build = resolve_path(build_dir)
    stamp = build / ".ddbook-cache-key"
    new = cache_key(**key)
    if stamp.is_file() and stamp.read_text().strip() == new:
        return False
    shutil.rmtree(build / ".jupyter_cache", ignore_errors=True)
    build.mkdir(parents=True, exist_ok=True)
    stamp.write_text(new + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddlib.book",
                                     description="drop the book's execution cache when stale")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--datasets", default="synthetic")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--build-dir", default="_build")
    args = parser.parse_args(argv)
    dropped = refresh_cache(args.build_dir, profile=args.profile, datasets=args.datasets,
                            results_dir=args.results_dir)
    print("execution cache " + ("cleared (results, ddlib or profile changed)" if dropped
                                else "kept (nothing changed)"))
    return 0
