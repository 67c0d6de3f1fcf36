"""`python -m ddlib book-cache`: drop Jupyter Book's execution cache when it is stale.

The cache is keyed on code cells only, so it misses new results, a changed `ddlib` and
another profile (jupyter-book issue 1633). `make book` runs this before building: the
cache is deleted when `cache_key` differs from the one stamped by the last build.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from .utils import project_root, resolve_path


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
    """Delete `build_dir`/.jupyter_cache and Sphinx's `.doctrees` when `cache_key(**key)`
    changed since the last build; return whether they were deleted."""
    build = resolve_path(build_dir)
    stamp = build / ".ddbook-cache-key"
    new = cache_key(**key)
    if stamp.is_file() and stamp.read_text().strip() == new:
        return False
    # Sphinx re-reads only changed sources: its saved doctrees would keep every page whose
    # notebook is unchanged as built before, whatever the execution cache says.
    for cached in (".jupyter_cache", ".doctrees"):
        shutil.rmtree(build / cached, ignore_errors=True)
    build.mkdir(parents=True, exist_ok=True)
    stamp.write_text(new + "\n")
    return True


def add_arguments(parser: Any) -> None:
    """Flags of `python -m ddlib book-cache`."""
    parser.add_argument("--profile", required=True, help="the build's profile")
    parser.add_argument("--datasets", default="synthetic",
                        help="the build's datasets, comma-separated (default: %(default)s)")
    parser.add_argument("--results-dir", default="results",
                        help="the results store the pages read (default: %(default)s)")
    parser.add_argument("--build-dir", default="_build",
                        help="Jupyter Book's build folder (default: %(default)s)")


def main(args: dict[str, Any]) -> int:
    dropped = refresh_cache(args["build_dir"], profile=args["profile"],
                            datasets=args["datasets"], results_dir=args["results_dir"])
    print("execution cache " + ("cleared (results, ddlib or profile changed)" if dropped
                                else "kept (nothing changed)"))
    return 0
