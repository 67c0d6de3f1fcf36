"""What the book's pages need besides the experiments: glue, the book's setting, its cache.

- `glue(values)`: MyST-NB glue of a page's key numbers (a no-op where myst_nb is missing,
  e.g. Colab), so prose can quote them with {glue:text}`key:.1f`.
- `setting(profile, dataset)`: which profile and dataset an exhibit page shows. `make book`
  exports DDBOOK_PROFILE and DDBOOK_DATASETS for the whole build; explicit values win; the
  fallback is the committed default (`smoke`, `synthetic`), which is what nbval compares.
- `GRID`: what `make book` runs for each profile (the sweep's jobs) and the exhibits show.
- `exhibit(...)`: the results of one exhibit page from the store, shown as the line that says
  what produced them, or, when this build did not run them, the command that does.
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

import numpy as np

from . import results as store
from .config import (DATASETS, IMAGENET_DATASETS, METHOD_ORDER, PROFILES, RunConfig,
                     check_choice)
from .data import CIFAR100_COARSE, CIFAR100_FIGURE1, dedicated_order_seed
from .utils import project_root, resolve_path

PROFILE_VAR, DATASETS_VAR = "DDBOOK_PROFILE", "DDBOOK_DATASETS"

# The book's run grid per profile. `paper` is the paper's full matrix (PROTOCOL 5.6) on
# CIFAR-100-like datasets; ImageNet datasets take their own increment (10 or 100) from the
# profile. `cpu` trims it to fit an hour on 2 cores: one class order, 10 and 20 classes per
# round (not 5, the costliest: 20 rounds), and the Figure 7 ablation for iCaRL only.
# `analysis_increment`: Table 2, Figures 6 and 7 (the paper's 20 per round).
GRID: dict[str, dict[str, Any]] = {
    "smoke": dict(increments=(5, 10), orders=(0,), analysis_increment=5,
                  ablation_methods=("icarl", "ucir"), similar_ks=(0, 1, 2, 3, 4)),
    "cpu": dict(increments=(10, 20), orders=(0,), analysis_increment=20,
                ablation_methods=("icarl",), similar_ks=(0, 1, 2, 3, 4)),
    "paper": dict(increments=(5, 10, 20), orders=(0, 1, 2), analysis_increment=20,
                  ablation_methods=METHOD_ORDER, similar_ks=(0, 1, 2, 3, 4)),
}


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
    chosen = {"profile": profile or os.environ.get(PROFILE_VAR) or "smoke",
              "dataset": dataset or (datasets[0].strip() if datasets else "synthetic")}
    check_choice("profile", chosen["profile"], PROFILES)
    check_choice("dataset", chosen["dataset"], DATASETS)
    return chosen


def grid(profile: str) -> dict[str, Any]:
    check_choice("profile", profile, GRID)
    return GRID[profile]


def figure1(profile: str, dataset: str) -> dict[str, Any]:
    """Figure 1's runs and class. On CIFAR-100, PROTOCOL 5.2's dedicated class order: 20 per
    round, the first seed bringing 'baby' in round 1 and 'boy', 'girl', 'man', 'woman' one
    per later round (seed 18). Elsewhere the grid's first increment and order 0, and the
    class is picked from the results (`analysis.figure1_class`): `followed` is None."""
    book_grid = grid(profile)
    if dataset != "cifar100":
        return {"increment": book_grid["increments"][0], "class_order_seed": None,
                "followed": None}
    increment = book_grid["analysis_increment"]
    (followed, label), *others = CIFAR100_FIGURE1.items()
    seed = dedicated_order_seed(len(CIFAR100_COARSE), increment, label,
                                tuple(index for _, index in others))
    return {"increment": increment, "followed": followed, "class_order_seed": seed}


class Exhibit:
    """The results one exhibit page shows: the runs of `profile` on `dataset` in the store
    that match `match`; it is `ready` when, for each dict in `require`, some run matches it.

    Shown in a notebook, it is a line that states what produced the page (profile, dataset,
    orders, epochs, runs), or, when this build lacks the runs, what is missing and the
    command that produces them. `show(func, ...)` calls `func(...)` only when ready, so a
    page without its runs shows that message and no empty axes.
    """

    def __init__(self, title: str, *, profile: str, dataset: str, results_dir: str = "results",
                 require: tuple[dict[str, Any], ...] = ({},), **match: Any) -> None:
        import pandas as pd

        self.title, self.profile, self.dataset = title, profile, dataset
        self.results_dir, self.match, self.require = results_dir, match, require
        # Runs of a dedicated class order (Figure 1) only where a page asks for them.
        found = [(path, payload) for path, payload in store.scan(results_dir)[0]
                 if store.matches(payload, profile=profile, dataset=dataset,
                                  **{"class_order_seed": None, **match})]
        self.results: list[dict[str, Any]] = [payload for _, payload in found]
        self.frame = pd.DataFrame([row for path, payload in found
                                   for row in store.frame_rows(payload, str(path))])
        self.missing = [need for need in require if not self.runs(**need)]

    @property
    def ready(self) -> bool:
        return bool(self.results) and not self.missing

    @property
    def grid(self) -> dict[str, Any]:
        return grid(self.profile)

    def runs(self, **match: Any) -> list[dict[str, Any]]:
        """The results whose config matches `match` (e.g. method="ucir", dd=True)."""
        return [r for r in self.results if store.matches(r, **match)]

    def show(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """`func(*args, **kwargs)` when ready, else None (nothing is drawn)."""
        return func(*args, **kwargs) if self.ready else None

    def glue(self, keys: list[str], func: Any, *args: Any, **kwargs: Any) -> None:
        """Glue `func(*args, **kwargs)` (a dict with exactly `keys`) for the prose; NaN for
        every key when not ready, so the page still builds and says 'nan'. Returns nothing,
        so the cell shows nothing but the glue."""
        values = func(*args, **kwargs) if self.ready else dict.fromkeys(keys, float("nan"))
        if sorted(values) != sorted(keys):
            raise ValueError(f"{func.__name__} gave {sorted(values)}, the page uses {keys}")
        glue(values)

    def command(self) -> str:
        """The command that produces this exhibit's runs."""
        if self.dataset in IMAGENET_DATASETS:  # only the paper profile has ImageNet settings
            return (f"python -m ddlib sweep --profile paper --datasets {self.dataset} "
                    "--data-dir /path/to/imagenet   # holds train/ and val/; a GPU\n"
                    f"make book PROFILE=paper DATASETS=cifar100,{self.dataset}")
        return f"make book PROFILE={self.profile} DATASETS={self.dataset}"

    def provenance(self) -> str:
        configs = [r["config"] for r in self.results]

        def values(key: str, dd_only: bool = False) -> str:
            return ", ".join(str(v) for v in sorted({c[key] for c in configs
                                                      if c["dd"] or not dd_only}))

        expert = (f" (expert {values('expert_epochs', True)} + "
                  f"{values('expert_balanced_epochs', True)})"
                  if any(c["dd"] for c in configs) else "")
        seeds = sorted({c.get("class_order_seed") for c in configs} - {None})
        orders = (f"the dedicated class order of numpy seed {', '.join(map(str, seeds))}"
                  if seeds else f"class orders {values('order')}")
        return (f"**{self.title}** is built from {len(configs)} runs in `{self.results_dir}/`: "
                f"profile `{self.profile}`; dataset `{self.dataset}`; {orders}; "
                f"classes per round {values('increment')}; epochs "
                f"{values('epochs')}{expert}.")

    def _repr_markdown_(self) -> str:
        if self.ready:
            return self.provenance()
        wanted = ", ".join(f"{k}={v}" for k, v in {**self.match, **(self.missing or [{}])[0]}
                           .items() if v is not None)
        return (f"**{self.title}: not run in this build.** The results store "
                f"`{self.results_dir}/` has no `{self.profile}`-profile run on "
                f"`{self.dataset}`" + (f" with {wanted}" if wanted else "")
                + f". This produces them:\n\n```bash\n{self.command()}\n```")

    def __repr__(self) -> str:
        return self._repr_markdown_()


def exhibit(title: str, profile: str | None = None, dataset: str | None = None, *,
            results_dir: str = "results", require: tuple[dict[str, Any], ...] = ({},),
            **match: Any) -> Exhibit:
    """The `Exhibit` of a page: `setting(profile, dataset)` decides what it shows."""
    chosen = setting(profile, dataset)
    return Exhibit(title, profile=chosen["profile"], dataset=chosen["dataset"],
                   results_dir=results_dir, require=require, **match)


def ablation_runs(profile: str) -> tuple[dict[str, Any], ...]:
    """Figure 7's required runs: every ablated method's baseline and +DD arms."""
    book_grid = grid(profile)
    arms = [{"dd": False}] + [{"dd": True, "similar_k": k} for k in book_grid["similar_ks"]]
    return tuple({"method": m, **arm} for m in book_grid["ablation_methods"] for arm in arms)


def table1(profile: str, datasets: list[str] | None = None, *,
           data_dir: str = "data") -> Any:
    """Table 1 from the dataset objects: classes, superclasses, images and image size of
    each dataset of the build (loaded as its runs load it); a dataset that is not on this
    machine gets a row saying so."""
    import pandas as pd

    from .run import load_scenario

    rows = []
    columns = ("classes", "superclasses", "train images", "test images", "train per class",
               "image size")
    for name in datasets or [setting(profile)["dataset"]]:
        cfg = RunConfig.resolve(profile, dataset=name, data_dir=data_dir)
        try:
            arrays = load_scenario(cfg).data
        except (OSError, ValueError) as err:
            where = resolve_path(data_dir)
            why = str(err).replace(str(where), data_dir)  # same text on every machine
            rows.append({"dataset": name, **dict.fromkeys(columns, ""),
                         "note": "not on this machine: " + why.split(":")[0]})
            continue
        per_train = np.bincount(arrays.train_y)
        rows.append({"dataset": name, "classes": arrays.num_classes,
                     "superclasses": len(arrays.coarse_names or []) or "",
                     "train images": len(arrays.train_y), "test images": len(arrays.test_y),
                     "train per class": f"{per_train.min()}-{per_train.max()}"
                     if per_train.min() != per_train.max() else int(per_train[0]),
                     "image size": "x".join(str(d) for d in arrays.train_x.shape[1:3]),
                     "note": f"as the `{profile}` profile loads it"})
    return pd.DataFrame(rows).set_index("dataset")


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
