"""Run one configuration end to end: data -> scenario -> rounds -> result file."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__, checkpoint, distributed, results
from .config import IMAGENET_DATASETS, RunConfig
from .engine import READ_AHEAD, DeviceData, explain_precision
from .methods import METHODS
from .metrics import average_incremental_accuracy
from .scenario import Scenario, load_dataset
from .report import ROUND_HEADER, round_row, round_table
from .utils import display_path, pick_device, resolve_path, write_error


def load_scenario(cfg: RunConfig) -> Scenario:
    """Dataset and class order of `cfg`, validated against the config."""
    sizes = {} if cfg.dataset != "synthetic" else dict(
        num_classes=cfg.synthetic_classes, num_superclasses=cfg.synthetic_superclasses,
        train_per_class=cfg.train_per_class, test_per_class=cfg.test_per_class,
        image_size=cfg.image_size, seed=0)
    if cfg.dataset in IMAGENET_DATASETS:
        sizes = dict(image_size=cfg.image_size)
    arrays = load_dataset(cfg.dataset, data_dir=resolve_path(cfg.data_dir), download=cfg.download,
                          **sizes)
    cfg.check_against(arrays.num_classes)
    return Scenario.build(arrays, order=cfg.order, init_classes=cfg.init_classes,
                          increment=cfg.increment, class_order_seed=cfg.class_order_seed)


def checkpoint_path(cfg: RunConfig, round_idx: int) -> Path:
    """Checkpoint of one finished round, beside the run's result file."""
    result = results.result_path(cfg)
    return result.parent / f"{result.stem}.ckpt" / f"round{round_idx:02d}.pt"


def round_one_path(cfg: RunConfig) -> Path:
    """Round 1 shared by every arm (baseline, +DD, any similar_k) of one method and order."""
    folder = results.result_path(cfg).parents[1].with_name(cfg.method)
    return folder / f"inc{cfg.increment}" / f"round1-order{cfg.order}-{cfg.round_one_identity()}.pt"


def _resume(cfg: RunConfig, method, num_rounds: int, say) -> list[dict]:
    """Load the latest readable checkpoint of this run (or the shared round 1); return the
    records of the rounds it covers."""
    for round_idx in range(num_rounds, 0, -1):
        path = checkpoint_path(cfg, round_idx)
        state = checkpoint.load(path)
        if state is None:
            continue
        # Older code or other settings at the same path: this run would overwrite it round by
        # round, except round 1 when it comes from the shared copy, so it goes now.
        if state["identity"] != cfg.identity():
            warnings.warn(f"{display_path(path)} was made by another version or configuration "
                          f"(identity {state['identity']}, this run {cfg.identity()}); "
                          "removed", stacklevel=2)
            path.unlink()
            continue
        method.load_state(state)
        say(f"resumed after round {round_idx} from {display_path(checkpoint_path(cfg, round_idx))}")
        return state["records"]
    state = checkpoint.load(round_one_path(cfg))
    if state is not None and state["identity"] == cfg.round_one_identity():
        method.load_state(state)
        say(f"round 1 shared with the other arms: {display_path(round_one_path(cfg))}")
        return state["records"]
    return []


def run(cfg: RunConfig, *, verbose: bool = True) -> dict[str, Any]:
    """Train and evaluate `cfg` round by round, resuming from its checkpoints; write and
    return its result record. An existing result of the same config is returned as is."""
    cfg.validate()
    device = distributed.init(pick_device(cfg.device))  # this rank's device under torchrun
    if distributed.active():  # the ranks must all run this config
        distributed.check_same_config(cfg.identity())
    say = tqdm.write if verbose and distributed.is_main() else (lambda _: None)
    store = results.result_path(cfg)
    try:  # an unwritable results folder must fail now, not after round 1 trained
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(store, err) from err
    twin = results.trained_by(cfg)
    if twin is not None:
        return _read_as(cfg, run(twin, verbose=verbose), say)
    if cfg.precision == "auto":
        say("precision auto -> {}: {}".format(*explain_precision("auto", cfg.device)))
    cfg = dataclasses.replace(cfg, precision=cfg.ran_precision())  # the result says which ran
    scenario = load_scenario(cfg)  # every input error surfaces here, before training
    # under torchrun rank 0 holds the lock for all ranks (they would wait on each other)
    with _exclusive(store, say) if distributed.is_main() else contextlib.nullcontext():
        return _run(cfg, scenario, store, device, say)


def _read_as(cfg: RunConfig, trained: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """`cfg`'s result from the run whose training is its own (`results.trained_by`): the same
    rounds, read with `cfg`'s inference rule. Re-derived on every call, so it follows that
    run when newer code redoes it."""
    inference = METHODS[cfg.method].inference
    payload = {key: value for key, value in trained.items() if key != "schema_version"}
    payload.update(identity=cfg.identity(), config=cfg.as_dict(), inference=inference,
                   trained_as={"method": trained["config"]["method"],
                               "identity": trained["identity"]})
    path = results.save(cfg, payload) if distributed.is_main() else results.result_path(cfg)
    say(f"{cfg.run_name}: same training as {trained['config']['method']}, read with "
        f"{inference} inference; average incremental accuracy "
        f"{payload['avg_inc_acc'][inference]:.2f}  -> {display_path(path)}")
    return payload


@contextlib.contextmanager
def _exclusive(store: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold an advisory lock on the run's result path, so that two sweeps (or two notebooks)
    planning the same run train it once: the second waits, then reads the result back."""
    with open(store.with_suffix(".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting: another process is running this configuration ({store.name})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cfg: RunConfig, scenario: Scenario, store: Path, device: torch.device,
         say: Callable[[str], None]) -> dict[str, Any]:
    distributed.barrier()  # torchrun: every rank reads the store once rank 0 holds its lock
    if not cfg.fresh and store.is_file():
        try:
            payload = results.read(store)
            if payload.get("identity") == cfg.identity():
                say(f"{cfg.run_name}: result exists, nothing to do -> {display_path(store)}\n"
                    + round_table(payload["rounds"]))
                return payload
        except ValueError as err:
            say(f"recomputing: {err}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    arrays = scenario.data
    imagenet = cfg.dataset in IMAGENET_DATASETS  # random-resized crop instead of pad-crop
    pad = 0 if imagenet else max(1, round(4 * arrays.train_x.shape[1] / 32))  # 4 at 32x32
    device_data = DeviceData.from_arrays(arrays, device, pad=pad, resized_crop=imagenet,
                                         channels_last=cfg.channels_last or device.type == "cuda",
                                         precision=cfg.precision, compile=cfg.compile)
    method = METHODS[cfg.method](cfg, scenario, device_data)
    say(f"{cfg.run_name} on {cfg.dataset} ({cfg.profile} profile), order {cfg.order}, "
        f"{scenario.num_rounds} rounds of {scenario.rounds}, device {device}, {cfg.precision}")
    if device_data.on_disk:
        say(f"training images ({arrays.train_x.nbytes / 2**30:.1f} GiB) stay in the disk cache, "
            f"memory-mapped, read {READ_AHEAD} batches ahead")
    records = [] if cfg.fresh else _resume(cfg, method, scenario.num_rounds, say)
    resumed = distributed.all_gather_object(len(records))
    if len(set(resumed)) > 1:
        raise RuntimeError(f"the ranks resumed after different rounds {resumed}: their "
                           "checkpoint folders differ (every rank must see the same disk)")
    say(ROUND_HEADER)
    for rec in records:
        say(round_row(rec))
    start = time.perf_counter()
    rounds = tqdm(range(len(records) + 1, scenario.num_rounds + 1), desc=cfg.run_name,
                  leave=False, disable=not cfg.progress or not distributed.is_main())
    for round_idx in rounds:
        rec = method.fit_round(round_idx)
        records.append(rec)
        distributed.share_round(method, rec)  # torchrun: all ranks continue with rank 0's state
        if distributed.is_main():
            state = {**method.state(), "records": records, "identity": cfg.identity()}
            checkpoint.save(checkpoint_path(cfg, round_idx), state)
            if round_idx == 1:
                checkpoint.save(round_one_path(cfg),
                                {**state, "identity": cfg.round_one_identity()})
        say(round_row(rec))
    accs = {rule: [r[f"acc_{rule}"] for r in records] for rule in ("cnn", "nme")}
    payload = {
        "ddlib_version": __version__,
        # The identity at write time: it hashes code versions (synthetic images, methods) as
        # well as the config, so a result made by older code is not taken for a current one.
        "identity": cfg.identity(),
        "config": cfg.as_dict(),
        "inference": method.inference,
        "env": {"device": str(device), "torch": torch.__version__,
                "python": platform.python_version(), "threads": torch.get_num_threads(),
                **({"ranks": distributed.world_size()} if distributed.active() else {})},
        "class_order": scenario.order.tolist(),
        "class_names": list(arrays.class_names),
        "coarse": None if arrays.coarse is None else arrays.coarse.tolist(),
        "coarse_names": arrays.coarse_names,
        "rounds": records,
        "avg_inc_acc": {rule: average_incremental_accuracy(a) for rule, a in accs.items()},
        "last_acc": {rule: a[-1] for rule, a in accs.items()},
        "wall_time_s": round(time.perf_counter() - start, 2),
        "train_time_s": round(sum(r["time"]["total"] for r in records), 2),
    }
    path: Path = results.save(cfg, payload) if distributed.is_main() else store
    distributed.barrier()  # the result file exists when any rank returns
    say(f"average incremental accuracy ({method.inference}): "
        f"{payload['avg_inc_acc'][method.inference]:.2f}  -> {display_path(path)}")
    return payload

