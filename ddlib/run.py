"""Run one configuration end to end: data -> scenario -> rounds -> result file."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__, data, results
from .config import RunConfig
from .engine import DeviceData
from .methods import METHODS
from .metrics import average_incremental_accuracy
from .utils import pick_device, resolve_path


def load_scenario(cfg: RunConfig) -> data.Scenario:
    """Dataset and class order of `cfg`, validated against the config."""
    sizes = {} if cfg.dataset != "synthetic" else dict(
        num_classes=cfg.synthetic_classes, num_superclasses=cfg.synthetic_superclasses,
        train_per_class=cfg.train_per_class, test_per_class=cfg.test_per_class,
        image_size=cfg.image_size, seed=0)
    arrays = data.load(cfg.dataset, data_dir=resolve_path(cfg.data_dir), download=cfg.download,
                       **sizes)
    cfg.check_against(arrays.num_classes)
    return data.Scenario.build(arrays, order=cfg.order, init_classes=cfg.init_classes,
                               increment=cfg.increment)


def run(cfg: RunConfig, *, verbose: bool = True) -> dict[str, Any]:
    """Train and evaluate `cfg` round by round; write and return its result record."""
    cfg.validate()
    device = pick_device(cfg.device)
    scenario = load_scenario(cfg)  # every input error surfaces here, before training
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    arrays = scenario.data
    pad = max(1, round(4 * arrays.train_x.shape[1] / 32))  # pad 4 at 32x32 (PROTOCOL 1.5)
    device_data = DeviceData.from_arrays(arrays, device, pad=pad,
                                         channels_last=cfg.channels_last or device.type == "cuda")
    method = METHODS[cfg.method](cfg, scenario, device_data)
    say = tqdm.write if verbose else (lambda _: None)
    say(f"{cfg.run_name} on {cfg.dataset} ({cfg.profile} profile), order {cfg.order}, "
        f"{scenario.num_rounds} rounds of {scenario.rounds}, device {device}")
    say(f"{'round':>5} {'classes':>7} {'acc_cnn':>8} {'acc_nme':>8} {'time_s':>7}")
    start = time.perf_counter()
    records = []
    rounds = tqdm(range(1, scenario.num_rounds + 1), desc=cfg.run_name, leave=False,
                  disable=not cfg.progress)
    for round_idx in rounds:
        rec = method.fit_round(round_idx)
        records.append(rec)
        say(f"{rec['round']:>5} {rec['classes_seen']:>7} {rec['acc_cnn']:>8.2f} "
            f"{rec['acc_nme']:>8.2f} {rec['time']['total']:>7.1f}")
    accs = {rule: [r[f"acc_{rule}"] for r in records] for rule in ("cnn", "nme")}
    payload = {
        "ddlib_version": __version__,
        "config": cfg.as_dict(),
        "inference": method.inference,
        "env": {"device": str(device), "torch": torch.__version__,
                "python": platform.python_version(), "threads": torch.get_num_threads()},
        "class_order": scenario.order.tolist(),
        "class_names": list(arrays.class_names),
        "coarse": None if arrays.coarse is None else arrays.coarse.tolist(),
        "coarse_names": arrays.coarse_names,
        "rounds": records,
        "avg_inc_acc": {rule: average_incremental_accuracy(a) for rule, a in accs.items()},
        "last_acc": {rule: a[-1] for rule, a in accs.items()},
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    path: Path = results.save(cfg, payload)
    say(f"average incremental accuracy ({method.inference}): "
        f"{payload['avg_inc_acc'][method.inference]:.2f}  -> {path}")
    return payload
