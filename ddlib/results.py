"""The results store: one versioned JSON file per run, written atomically (DESIGN.md).

Path: <results_dir>/<profile>/<dataset>/<method>[+dd[-kK]]/inc<N>/order<k>[-<hash>].json;
the hash suffix appears when the config overrides profile values, so two different configs
never share a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import RunConfig
from .utils import resolve_path, write_json_atomic

SCHEMA_VERSION = 1


def result_path(cfg: RunConfig) -> Path:
    folder = (resolve_path(cfg.results_dir) / cfg.profile / cfg.dataset / cfg.run_name
              / f"inc{cfg.increment}")
    stem = f"order{cfg.order}"
    if cfg.init_classes != cfg.increment or cfg.overrides():
        stem += f"-{cfg.identity()}"
    return folder / f"{stem}.json"


def save(cfg: RunConfig, payload: dict[str, Any]) -> Path:
    path = result_path(cfg)
    write_json_atomic(path, {"schema_version": SCHEMA_VERSION, **payload})
    return path


def read(path: str | Path) -> dict[str, Any]:
    """One result file; ValueError naming the path when it is not a current-schema result."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable result file ({err})") from err
    if payload.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {payload.get('schema_version')!r}, "
                         f"expected {SCHEMA_VERSION}")
    return payload


def load(results_dir: str | Path = "results", **match: Any):
    """Tidy DataFrame, one row per (run, round), of every result under `results_dir` whose
    config matches `match` (e.g. profile="cpu", method="icarl")."""
    import pandas as pd

    rows = []
    for path in sorted(resolve_path(results_dir).rglob("*.json")):
        payload = read(path)
        cfg = payload["config"]
        if any(cfg.get(k) != v for k, v in match.items()):
            continue
        for rec in payload["rounds"]:
            rows.append({
                "run": cfg["method"] + ("+dd" if cfg["dd"] else ""), "method": cfg["method"],
                "dd": cfg["dd"], "similar_k": cfg["similar_k"], "order": cfg["order"],
                "increment": cfg["increment"], "profile": cfg["profile"],
                "dataset": cfg["dataset"], "round": rec["round"],
                "classes_seen": rec["classes_seen"], "acc_cnn": rec["acc_cnn"],
                "acc_nme": rec["acc_nme"], "acc": rec[f"acc_{payload['inference']}"],
                "path": str(path)})
    return pd.DataFrame(rows)
