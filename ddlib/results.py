"""The results store: one versioned JSON file per run, written atomically (DESIGN.md).

Path: <results_dir>/<profile>/<dataset>/<method>[+dd[-kK]]/inc<N>/order<k>[-<hash>].json;
the hash suffix appears when the config overrides profile values, so two different configs
never share a file.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from math import nan
from pathlib import Path
from typing import Any

from .config import RunConfig
from .names import run_name
from .utils import display_path, resolve_path, write_json_atomic

SCHEMA_VERSION = 1
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


def result_path(cfg: RunConfig) -> Path:
    folder = (resolve_path(cfg.results_dir) / cfg.profile / cfg.dataset / cfg.run_name
              / f"inc{cfg.increment}")
    stem = f"order{cfg.order}"
    if cfg.init_classes != cfg.increment or cfg.overrides():
        stem += f"-{cfg.identity()}"
    return folder / f"{stem}.json"


def current(cfg: RunConfig) -> dict[str, Any] | None:
    """`cfg`'s stored result, or None when there is none or the file holds a run of another
    identity (an older profile's schedule, older synthetic images) at the same path."""
    path = result_path(cfg)
    payload = read(path) if path.is_file() else None
    return payload if payload and payload.get("identity") == cfg.identity() else None


def trained_by(cfg: RunConfig) -> RunConfig | None:
    """The other method's run whose training is `cfg`'s step for step, if any; `cfg`'s result
    is then that run's rounds read with `cfg`'s inference rule, not a second training. LwF
    with exemplars trains exactly as iCaRL (same data, same loss); they differ only in
    inference (CNN vs NME), and every record stores both rules."""
    if cfg.method == "lwf" and cfg.lwf_exemplars:
        return dataclasses.replace(cfg, method="icarl")
    return None


def save(cfg: RunConfig, payload: dict[str, Any]) -> Path:
    path = result_path(cfg)
    write_json_atomic(path, {"schema_version": SCHEMA_VERSION, **payload})
    return path


def read(path: str | Path) -> dict[str, Any]:
    """One result file; ValueError naming the path when it is not a current-schema result."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or not UTF-8
        raise ValueError(f"{path}: not a readable result file ({err})") from err
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a result file (a JSON {type(payload).__name__})")
    if payload.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {payload.get('schema_version')!r}, "
                         f"expected {SCHEMA_VERSION}")
    kinds = {"config": dict, "rounds": list, "inference": str}
    bad = [k for k, kind in kinds.items() if not isinstance(payload.get(k), kind)]
    if bad:
        raise ValueError(f"{path}: not a complete result file (missing or malformed {bad})")
    return payload


def scan(results_dir: str | Path = "results") -> tuple[list[tuple[Path, dict[str, Any]]],
                                                       list[tuple[Path, str]]]:
    """Every current-schema result under `results_dir` as (path, payload), and every other
    `*.json` file as (path, why it was skipped): older schema, unreadable, not a result.
    Checkpoints (.pt), temp files of interrupted writes and folders are not looked at."""
    found, skipped = [], []
    root = resolve_path(results_dir)
    for path in sorted(root.rglob("*.json")):
        if not path.is_file():
            continue
        try:
            found.append((path, read(path)))
        except ValueError as err:
            skipped.append((path, str(err)))
    return found, skipped


def config_value(payload: dict[str, Any], key: str) -> Any:
    """The result's config value of `key`. A field the result predates counts at its
    default: the run ran with it and kept its identity (`RunConfig.identity`), e.g.
    `expert_init` "old"."""
    return payload["config"].get(key, _FIELD_DEFAULTS.get(key))


def _stored_config(payload: dict[str, Any]) -> tuple[RunConfig, set[str]]:
    """The result's config as a RunConfig (JSON lists back to tuples) and the fields it
    stores; fields it does not store take their defaults."""
    stored = {k: tuple(v) if isinstance(v, list) else v
              for k, v in payload["config"].items() if k in _FIELD_DEFAULTS}
    return RunConfig(**stored), set(stored)


def is_stale(payload: dict[str, Any]) -> bool:
    """Whether the result was made by code whose runs of its config now differ (synthetic
    images, a method's training: `RunConfig.identity`); results without an identity are
    not judged."""
    return "identity" in payload and _stored_config(payload)[0].identity() != payload["identity"]


def overridden(payload: dict[str, Any]) -> set[str]:
    """Fields the result's run set away from its profile's values (`RunConfig.overrides`):
    a study's longer schedule, a scratch-started expert, a dedicated class order. A field
    the result does not store counts at the profile's value."""
    cfg, stored = _stored_config(payload)
    return set(cfg.overrides()) & stored


def matches(payload: dict[str, Any], **match: Any) -> bool:
    """Whether the result's config has every `key: value` of `match` (`config_value`)."""
    return all(config_value(payload, k) == v for k, v in match.items())


def frame_rows(payload: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The tidy rows (one per round) of one result; `source` fills the `path` column."""
    cfg = payload["config"]
    return [{"run": run_name(cfg["method"], cfg["dd"]), "method": cfg["method"],
             "dd": cfg["dd"], "similar_k": cfg["similar_k"], "order": cfg["order"],
             "increment": cfg["increment"], "profile": cfg["profile"],
             "dataset": cfg["dataset"], "round": rec["round"],
             "classes_seen": rec["classes_seen"], "acc_cnn": rec["acc_cnn"],
             "acc_nme": rec["acc_nme"], "acc": rec[f"acc_{payload['inference']}"],
             # top-5: results written before it was recorded have none (NaN)
             "top5_cnn": rec.get("top5_cnn", nan), "top5_nme": rec.get("top5_nme", nan),
             "top5": rec.get(f"top5_{payload['inference']}", nan),
             "path": source} for rec in payload["rounds"]]


def load(results_dir: str | Path = "results", **match: Any):
    """Tidy DataFrame, one row per (run, round), of every result under `results_dir` whose
    config matches `match` (e.g. profile="cpu", method="icarl"). Files that are not
    current-schema results are skipped with a warning and listed, as (path, reason), in
    `frame.attrs["skipped"]`."""
    import pandas as pd

    rows = []
    found, skipped = scan(results_dir)
    for path, payload in found:
        if not matches(payload, **match):
            continue
        try:
            rows += frame_rows(payload, str(path))
        except (KeyError, TypeError) as err:
            skipped.append((path, f"{path}: malformed result ({type(err).__name__}: {err})"))
    if skipped:
        warnings.warn(f"results.load skipped {len(skipped)} file(s) under "
                      f"{display_path(resolve_path(results_dir))} "
                      f"(listed in frame.attrs['skipped']), e.g. {skipped[0][1]}", stacklevel=2)
    frame = pd.DataFrame(rows)
    frame.attrs["skipped"] = skipped
    return frame
