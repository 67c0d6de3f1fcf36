"""A set of runs for one notebook: plan it, describe it, run it.

The experiment notebooks are three calls: `plan` resolves and validates every run of the
papermill parameters up front (a bad value fails the first cell, with ddlib's message),
`describe` shows them, and `run_all` trains them (resuming, and reading back finished runs
from the results store). `ddlib.analysis.summary_table` and its neighbours then turn the
results into rounded tables.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import analysis, results
from .config import PROFILES, RunConfig, check_choice
from .run import run
from .utils import display_path, progress

# Classes of the datasets whose size is known without loading them (for early checks).
_KNOWN_CLASSES = {"cifar100": 100}


def plan(profile: str, *, method: str | Sequence[str], dataset: str | None = None,
         increments: int | Sequence[int] | None = None,
         dd: bool | Sequence[bool] = (False, True), orders: int | Sequence[int] = (0,),
         similar_k: int | Sequence[int] | None = None, device: str = "auto",
         results_dir: str = "results",
         **overrides: Any) -> list[RunConfig]:
    """Every run of `method` (one or a list) for increments x dd x similar_k x orders,
    resolved from `profile` and validated before any work; ValueError names the first bad
    parameter.

    `increments`, `dd`, `orders` and `similar_k` take one value or a list (papermill's
    `-p dd True` or `-y "dd: [false, true]"`); None means the profile's value, for the
    lists and for any `RunConfig` field passed in `overrides` (`RunConfig.resolve`: an
    `epochs` override scales the expert's phases and moves the milestones with it).
    Progress bars follow `TQDM_DISABLE=1` unless `progress` is given.
    """
    check_choice("profile", profile, PROFILES)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.setdefault("progress", os.environ.get("TQDM_DISABLE") != "1")
    runs: dict[Path, RunConfig] = {}  # a baseline planned once whatever the similar_k list
    grid = itertools.product(_values("method", method, str),
                             _values("increments", increments, int, allow_none=True),
                             _values("dd", dd, bool),
                             _values("similar_k", similar_k, int, allow_none=True),
                             _values("orders", orders, int))
    for name, increment, with_dd, k, order in grid:
        cfg = RunConfig.resolve(profile, method=name, dataset=dataset, increment=increment,
                                dd=with_dd, order=order, similar_k=k if with_dd else None,
                                device=device, results_dir=results_dir, **overrides)
        _check_rounds(cfg)
        runs.setdefault(results.result_path(cfg), cfg)
    return list(runs.values())


def run_all(runs: Iterable[RunConfig], *, verbose: bool = True, jobs: int = 1) -> list[dict[str, Any]]:
    """`ddlib.run` each config (finished runs are read back from the store), in turn or on
    `jobs` worker processes taking them in the given order, runs that read another's
    training last (results in the given order); the first error stops everything, so a
    notebook fails loudly."""
    runs = list(runs)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive integer")
    if jobs == 1:
        return [run(cfg, verbose=verbose) for cfg in progress(runs, desc="runs", total=len(runs))]
    # a run that reads another's training starts last: earlier, its worker would only wait
    # on the lock of the run being trained
    queue = sorted(range(len(runs)), key=lambda i: results.trained_by(runs[i]) is not None)
    # spawn: a forked child would inherit this process's torch thread pool and locks
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {i: pool.submit(run, runs[i], verbose=verbose) for i in queue}
        try:
            return [futures[i].result() for i in range(len(runs))]
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def describe(runs: Iterable[RunConfig]) -> pd.DataFrame:
    """One row per planned run: what it is and where its result goes (path from the
    project root), as shown under every notebook's plan."""
    rows = []
    for cfg in runs:
        expert = (f"{cfg.expert_epochs}+{cfg.expert_balanced_epochs}" if cfg.dd else "-")
        rows.append({"run": analysis.display_name(cfg.as_dict()), "profile": cfg.profile,
                     "dataset": cfg.dataset, "increment": cfg.increment, "order": cfg.order,
                     "epochs": cfg.epochs, "expert epochs": expert, "memory": cfg.memory,
                     "result": display_path(results.result_path(cfg))})
    return pd.DataFrame(rows).set_index("run")


def _values(name: str, value: Any, kind: type, *, allow_none: bool = False) -> list[Any]:
    """One value or a non-empty list of them, each of type `kind` (None when allowed)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{name}=[] is empty; give at least one value")
    for item in items:
        ok = (item is None and allow_none) or (
            isinstance(item, kind) and (kind is bool or not isinstance(item, bool)))
        if not ok:
            raise ValueError(f"{name}={value!r}: each value must be {kind.__name__}"
                             f"{' or None' if allow_none else ''}, got {item!r}")
    return items


def _check_rounds(cfg: RunConfig) -> None:
    """Round structure and memory against the dataset size, when it is known without
    loading the data (synthetic, CIFAR-100); ddlib.run checks the rest."""
    num_classes = (cfg.synthetic_classes if cfg.dataset == "synthetic"
                   else _KNOWN_CLASSES.get(cfg.dataset))
    if num_classes is not None:
        cfg.check_against(num_classes)

