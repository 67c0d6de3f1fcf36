"""`python -m ddlib bench`: how fast training goes, and why. A benchmark, not a test: numbers
depend on the machine and its load.

1. Step rate: images/s of one full-width ResNet-32 training step (batch 128, 32x32):
   (a) ours: uint8 images on the device, batched crop/flip/normalise, channels-last model,
       in fp32 and in bf16 autocast (and compiled, with `--compile`);
   (b) the limit: the same model fed ready-made tensors (data cost zero);
   (c) the common toolbox way: DataLoader + per-image PIL transforms (`--workers` worker
       processes), model in the default memory format, fp32 and bf16.
2. End to end (`--e2e`): one iCaRL+DD run of the `cpu` profile through our engine against
   the same run through `reference_loop` (the toolbox loop), and where the saved seconds go.
3. `--gpu-check` (benchmarks/gpu-check.sh): on CUDA, in parts that each fit a 10-minute
   call: 2 rounds of a `paper`-profile iCaRL+DD on CIFAR-100-shaped synthetic data with the
   projected 10-round time, the step rates above, and 1/2/4/8 runs packed on one GPU; one
   JSON and a short table, rewritten as the numbers come.

Needs only torch, torchvision, numpy (and PIL, which torchvision brings): no papermill.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import engine
from .augment import Augment
from .data import CIFAR_MEAN, CIFAR_STD
from .models import LinearHead, Net, ResNet32, backbones_through
from .utils import int_flag

BATCH = 128
TINY = dict(batch=16, size=16, width=0.25)  # dry runs: the plumbing, in seconds
FULL = dict(batch=BATCH, size=32, width=1.0)
PACKED = (1, 2, 4, 8)  # runs per GPU measured by the GPU check


# ---------------------------------------------------------------------------- step rate

def _model(channels_last: bool, device: torch.device,
           width: float = 1.0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    backbone = ResNet32(width=width)
    net = Net(backbone, LinearHead(backbone.out_dim, 100)).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net.train(), torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9,
                                        weight_decay=5e-4)


def _stepper(net: nn.Module, opt: torch.optim.Optimizer, device: torch.device, precision: str,
             compiled: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One SGD step on (x, y), in `precision`; `compiled`: the backbone through one
    engine.compiled call, head and loss eager, as the engine trains."""
    call = engine.compiled(engine.run_backbone, device) if compiled else None
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with cast, (backbones_through(call) if call else contextlib.nullcontext()):
            loss = F.cross_entropy(net(x)[1].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _rate(step: Callable[[], None], steps: int, device: torch.device, *, warmup: int = 3,
          max_seconds: float = 20.0, batch: int = BATCH) -> float:
    """Images/s over `steps` steps after `warmup`; stops early (at least 2 steps) once
    `max_seconds` have passed (bf16 on a CPU without AMX is ~10x slower than fp32)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start, done = time.perf_counter(), 0
    while done < steps and (done < 2 or time.perf_counter() - start < max_seconds):
        step()
        done += 1
    _sync(device)
    return done * batch / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Source:
    """Random uint8 CIFAR-sized images on `device`, served as ours and as the toolbox's."""

    def __init__(self, device: torch.device, batch: int = BATCH, size: int = 32) -> None:
        rng = np.random.default_rng(0)
        n = 100 * batch
        self.batch = batch
        self.images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 100, n)
        self.device = device
        self.x = torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.y = torch.from_numpy(self.labels).to(device)
        self.aug = Augment(CIFAR_MEAN, CIFAR_STD, pad=4, device=device)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.cursor = 0

    def ours(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.cursor * self.batch % (len(self.images) - self.batch)
        self.cursor += 1
        idx = slice(start, start + self.batch)
        x = self.aug.train(self.x[idx], self.gen).contiguous(memory_format=torch.channels_last)
        return x, self.y[idx]

    def toolbox(self, workers: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        loader = _pil_loader(self.images, self.labels, pad=4, mean=CIFAR_MEAN, std=CIFAR_STD,
                             batch_size=self.batch, workers=workers, train=True,
                             pin=self.device.type == "cuda")
        batches: Iterator = iter(())

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal batches
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

        return next_batch


def step_rates(*, device: str = "cpu", precisions: tuple[str, ...] = ("fp32", "bf16"),
               compile_modes: tuple[bool, ...] = (False,), workers: int = 0, steps: int = 10,
               repeats: int = 3, max_seconds: float = 20.0, warmup: int = 3, tiny: bool = False,
               say: Callable[[str], None] = print) -> dict[str, float]:
    """Images/s of each variant, best of `repeats` (interleaved: other load hits all alike).
    Keys: "ours fp32", "ours bf16 compiled", "premade fp32", "toolbox bf16", ...
    `tiny`: a quarter-width net on small batches of 16x16 images (dry runs)."""
    dev = torch.device(device)
    shape = TINY if tiny else FULL
    src = _Source(dev, shape["batch"], shape["size"])
    width = shape["width"]
    variants: dict[str, Callable[[], None]] = {}
    for precision in precisions:
        for compiled in compile_modes:
            step = _stepper(*_model(True, dev, width), dev, precision, compiled)
            variants[f"ours {precision}" + (" compiled" if compiled else "")] = (
                lambda step=step: step(*src.ours()))
    fixed = src.ours()
    premade = _stepper(*_model(True, dev, width), dev, "fp32", False)
    variants["premade fp32"] = lambda: premade(*fixed)
    for precision in precisions:
        toolbox = _stepper(*_model(False, dev, width), dev, precision, False)
        batch = src.toolbox(workers)
        variants[f"toolbox {precision}"] = lambda toolbox=toolbox, batch=batch: toolbox(*batch())
    rates = {name: 0.0 for name in variants}
    for _ in range(repeats):
        for name, step in variants.items():
            rates[name] = max(rates[name], _rate(step, steps, dev, warmup=warmup,
                                                 max_seconds=max_seconds, batch=src.batch))
    aug_only = _rate(lambda: src.ours(), steps, dev, warmup=warmup, max_seconds=max_seconds,
                     batch=src.batch)
    batch = src.batch
    say(f"ResNet-32 (width {width}), batch {batch}, {shape['size']}x{shape['size']}, {dev}, "
        f"{torch.get_num_threads()} threads, "
        f"toolbox with {workers} loader workers; best of {repeats} x up to {steps} steps")
    for name, rate in rates.items():
        say(f"  {name:<22} {rate:9.1f} img/s   {rate / rates['ours fp32']:5.2f} x ours fp32")
    say(f"  augmentation alone     {aug_only:9.0f} img/s "
        f"({1000 * batch / aug_only:.1f} ms of each {1000 * batch / rates['ours fp32']:.0f} ms "
        "fp32 step)")
    return {**rates, "augmentation only": aug_only}


# -------------------------------------------------------------------- the reference loop

def _pil_loader(images: np.ndarray, labels: np.ndarray, *, pad: int, mean, std,
                batch_size: int, workers: int, train: bool, pin: bool = False,
                seed: int = 0):
    """torchvision's usual pipeline: one PIL image at a time (RandomCrop with padding,
    RandomHorizontalFlip for training; ToTensor, Normalize), shuffled for training."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    size = images.shape[1]
    steps = [transforms.RandomCrop(size, padding=pad), transforms.RandomHorizontalFlip()]
    tf = transforms.Compose((steps if train else [])
                            + [transforms.ToTensor(), transforms.Normalize(mean, std)])

    class Arrays(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return tf(Image.fromarray(images[i])), int(labels[i])

    return DataLoader(Arrays(), batch_size=batch_size, shuffle=train, num_workers=workers,
                      pin_memory=pin, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False)


@contextlib.contextmanager
def reference_loop(*, workers: int = 0, clock: Callable[[], float] = time.perf_counter
                   ) -> Iterator[dict[str, float]]:
    """Within the block, `engine.train` is the loop common toolboxes run: a DataLoader of
    per-image PIL transforms from host arrays, a `loss.item()` per step for the running
    loss (a host sync each step), and after every epoch a logging pass over that epoch's
    training images (eval mode, test transform, the full loss with its teachers), as
    FACIL's `eval_on_train` does. Teachers: iCaRL+DD has one per loss (old model -> Lo,
    expert -> Ln), so the reference makes the same teacher passes as ours. Yields seconds
    spent waiting for batches ("load") and in logging passes ("logging"), by `clock`."""
    spent = {"load": 0.0, "logging": 0.0}
    own_train, host = engine.train, {}

    def train(model, data, indices, loss_fn, schedule, *, generator, params=None,
              desc="train", show_progress=True):
        if id(data) not in host:  # the toolbox keeps its dataset as host arrays
            host[id(data)] = (data.train_x.permute(0, 2, 3, 1).cpu().numpy(),
                              data.train_y.cpu().numpy(),
                              (data.augment.mean.flatten() / 255).tolist(),
                              (data.augment.std.flatten() / 255).tolist())
        images, labels, mean, std = host[id(data)]
        device = data.device
        params = [p for p in (model.parameters() if params is None else params)
                  if p.requires_grad]
        opt = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum,
                              weight_decay=schedule.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(schedule.milestones), gamma=0.1)
        history = []
        for epoch in range(schedule.epochs):
            chosen = np.asarray(indices(epoch) if callable(indices) else indices)
            common = dict(pad=data.augment.pad, mean=mean, std=std, workers=workers,
                          batch_size=schedule.batch_size, pin=device.type == "cuda", seed=epoch)
            model.train()
            sums: dict[str, float] = {}
            steps = 0
            batches = iter(_pil_loader(images[chosen], labels[chosen], train=True, **common))
            while True:
                t0 = clock()
                batch = next(batches, None)
                spent["load"] += clock() - t0
                if batch is None:
                    break
                x, y = (t.to(device, non_blocking=True) for t in batch)
                with data.autocast():
                    loss, parts = loss_fn(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for key, value in {"loss": loss, **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value.item()
                steps += 1
            sched.step()
            history.append({k: v / max(steps, 1) for k, v in sums.items()})
            t0 = clock()
            model.eval()
            with torch.no_grad():
                for x, y in _pil_loader(images[chosen], labels[chosen], train=False, **common):
                    with data.autocast():
                        loss_fn(x.to(device), y.to(device))[0].item()
            spent["logging"] += clock() - t0
        model.eval()
        return history

    engine.train = train
    try:
        yield spent
    finally:
        engine.train = own_train


# --------------------------------------------------------------------------- end to end

def quick_overrides(epochs: int = 2) -> dict[str, Any]:
    """A run's schedules shrunk to `epochs` (>= 2) epochs each: the quick mode."""
    return dict(epochs=epochs, milestones=(epochs,), expert_epochs=epochs,
                expert_milestones=(epochs,), expert_balanced_epochs=max(1, epochs // 2),
                expert_balanced_milestones=(), bic_epochs=epochs)


def end_to_end(*, profile: str = "cpu", quick: bool = False, workers: int = 0,
               device: str = "auto", compiled: bool = False,
               say: Callable[[str], None] = print, **overrides: Any) -> dict[str, Any]:
    """Seconds of one iCaRL+DD run of `profile` through our engine and through
    `reference_loop`, fresh, in a temporary results store; where the difference comes from.
    `compiled`: also through our engine with `compile="on"` ("ours compiled"), from an empty
    inductor cache: its whole compile counted, code generation in-process and the C++
    compiler's processes included in CPU seconds.
    On the CPU with the loader in-process (`workers=0`) the seconds are this process's CPU
    time, which other jobs on the machine do not inflate (wall-clock time compared two runs
    made under whatever load each met); else wall-clock time. `clock` in the result says
    which."""
    from .config import RunConfig
    from .run import run
    from .utils import pick_device

    cpu_clock = workers == 0 and pick_device(device).type == "cpu"
    clock = _cpu_seconds if cpu_clock else time.perf_counter
    out: dict[str, Any] = {"clock": "cpu" if cpu_clock else "wall", "quick": quick}
    with tempfile.TemporaryDirectory() as store:
        for name in ("ours", "reference") + (("ours compiled",) if compiled else ()):
            cfg = RunConfig.resolve(profile, method="icarl", dd=True, device=device,
                                    results_dir=str(Path(store) / name), progress=False,
                                    compile="on" if name == "ours compiled" else "off",
                                    **(quick_overrides() if quick else {}), **overrides)
            with (reference_loop(workers=workers, clock=clock) if name == "reference"
                  else _cold_compile(Path(store) / "inductor") if name == "ours compiled"
                  else contextlib.nullcontext({})) as spent:
                start = clock()
                result = run(cfg, verbose=False)
                seconds = clock() - start
            out[name] = {"seconds": round(seconds, 2),
                         "train_s": round(sum(r["time"].get("classifier", 0)
                                              + r["time"].get("expert", 0)
                                              for r in result["rounds"]), 2),
                         "avg_inc_acc": result["avg_inc_acc"][result["inference"]],
                         **{f"{k}_s": round(v, 2) for k, v in spent.items()}}
            out["precision"] = result["config"]["precision"]
    ours, ref = out["ours"], out["reference"]
    saved = ref["seconds"] - ours["seconds"]
    rest = saved - ref["load_s"] - ref["logging_s"]
    out.update(speedup=round(ref["seconds"] / ours["seconds"], 3), saved_s=round(saved, 2),
               saved_by={"pil_pipeline_wait": ref["load_s"], "logging_passes": ref["logging_s"],
                         "steps_and_rest": round(rest, 2)})
    say(f"iCaRL+DD, {profile} profile{' (quick: 2 epochs per stage)' if quick else ''}, "
        f"{out['precision']}, {torch.get_num_threads()} threads, "
        f"{'CPU' if cpu_clock else 'wall-clock'} seconds")
    say(f"  ours       {ours['seconds']:8.1f} s   avg inc acc {ours['avg_inc_acc']:.2f}")
    say(f"  reference  {ref['seconds']:8.1f} s   avg inc acc {ref['avg_inc_acc']:.2f}   "
        f"ours is {out['speedup']:.2f}x faster, {saved:.1f} s saved:")
    say(f"    {ref['load_s']:8.1f} s the reference waited for PIL batches (ours augments on "
        "the device inside its step)")
    say(f"    {ref['logging_s']:8.1f} s in its per-epoch logging passes (ours logs running "
        "means, synced once per epoch)")
    say(f"    {rest:8.1f} s the rest: step compute, per-step loss.item() syncs, and our "
        "augmentation's own cost (negative = ours spent more)")
    if compiled:
        fast = out["ours compiled"]
        out["compile_speedup"] = round(ours["seconds"] / fast["seconds"], 3)
        say(f"  ours compiled {fast['seconds']:5.1f} s   avg inc acc {fast['avg_inc_acc']:.2f}"
            f"   {out['compile_speedup']:.2f}x ours eager (its compile included)")
    return out


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the C++ compiler's)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextlib.contextmanager
def _cold_compile(cache: Path) -> Iterator[dict[str, float]]:
    """Inductor from an empty cache, compiling in this process (not in a worker pool whose
    CPU time no clock of ours sees)."""
    import torch._inductor.config as inductor

    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    try:
        with inductor.patch(compile_threads=1):
            yield {}
    finally:
        if before is None:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


# ---------------------------------------------------------------------------- GPU check

def paper_rounds(*, rounds: int = 2, total_rounds: int = 10, device: str = "cuda",
                 compile: str = "auto", precision: str = "auto", smoke: bool = False,
                 on_round: Callable[[dict[str, Any]], None] | None = None,
                 say: Callable[[str], None] = print) -> dict[str, Any]:
    """`rounds` rounds of a `paper`-profile iCaRL+DD on synthetic data of CIFAR-100's shape
    (100 classes, 500 train / 100 test per class, 32x32); rounds 3.. train on as many images
    as round 2 (500 per new class + the fixed memory), so a full run is projected as round
    1 + (total_rounds - 1) x round 2. `on_round` gets the numbers so far after each round.
    `smoke`: the smoke profile instead (dry runs)."""
    from .config import RunConfig
    from .methods import METHODS
    from .run import load_scenario

    shape = {} if smoke else dict(dataset="synthetic", synthetic_classes=100,
                                  synthetic_superclasses=20, train_per_class=500,
                                  test_per_class=100, image_size=32)
    cfg = RunConfig.resolve("smoke" if smoke else "paper", method="icarl", dd=True,
                            device=device, compile=compile, precision=precision,
                            progress=False, **shape)
    dev = torch.device(device)
    scenario = load_scenario(cfg)
    data = engine.DeviceData.from_arrays(scenario.data, dev, pad=max(1, cfg.image_size // 8),
                                         channels_last=True, precision=cfg.precision,
                                         compile=cfg.compile)
    method = METHODS["icarl"](cfg, scenario, data)
    times, accs, rates = [], [], []
    for r in range(1, rounds + 1):
        trained = cfg.epochs * (len(scenario.train_indices(scenario.new_classes(r)))
                                + len(method.memory.indices()))
        _sync(dev)
        start = time.perf_counter()
        record = method.fit_round(r)
        _sync(dev)
        times.append(round(time.perf_counter() - start, 2))
        accs.append(record["acc_nme"])
        rates.append(round(trained / record["time"]["classifier"], 1))
        say(f"  round {r}: {times[-1]:.1f} s ({record['time']}), NME accuracy "
            f"{record['acc_nme']:.1f}")
        if on_round is not None:
            on_round(_rounds_summary(times, accs, rates, data, total_rounds))
    out = _rounds_summary(times, accs, rates, data, total_rounds)
    say(f"{cfg.profile}-profile iCaRL+DD on {cfg.synthetic_classes} classes of "
        f"{cfg.image_size}x{cfg.image_size}, {data.precision}, compiled {data.compile}: "
        f"projected {total_rounds}-round run {out['projected_full_run_s'] / 60:.1f} min")
    return out


def _rounds_summary(times: list[float], accs: list[float], rates: list[float],
                    data: engine.DeviceData, total_rounds: int) -> dict[str, Any]:
    projected = times[0] + (total_rounds - 1) * times[-1] if len(times) > 1 else None
    return {"round_s": times, "acc_nme": accs, "precision": data.precision,
            "compiled": data.compile,
            "projected_full_run_s": None if projected is None else round(projected, 1),
            "classifier_img_per_s": rates}  # images through the classifier's steps


# The parts in the order they run: the projected 10-round paper run first, the main number.
GPU_PARTS = ("paper_rounds", "step_rates", "packed")
# Seconds a part may take before it is killed (what it measured so far stays in the JSON).
# Sized to a device call of 600 s: paper_rounds and step_rates always fit one (480 s), packed
# too when they end early, else a second call on the still-warm machine; with the machine's
# start (1-2 minutes) 13 minutes at worst (the order of calls: benchmarks/gpu-check.sh).
PART_SECONDS = {"paper_rounds": 360, "step_rates": 120, "packed": 150}
CALL_SECONDS = 570  # a part starts only if its whole budget fits in what is left of these
DRY_PART_SECONDS = 600  # dry runs: tiny parts on a CPU that other jobs may load


def _source_env() -> dict[str, str]:
    """This environment with the source tree first on PYTHONPATH (a child imports ddlib)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}


def packed_rates(counts: tuple[int, ...] = PACKED, *, seconds: float = 20.0,
                 device: str = "cuda", precision: str = "bf16", compile: bool = True,
                 tiny: bool = False, on_count: Callable[[dict[str, Any]], None] | None = None,
                 say: Callable[[str], None] = print) -> dict[str, Any]:
    """Total images/s of n = `counts` processes each training ResNet-32 (our loop) on one
    device at once: each warms up (and compiles), waits for the others, then steps for
    `seconds`. The best n is the sweep's --jobs-per-gpu. `on_count` gets the numbers so far
    after each n."""
    out: dict[str, Any] = {}
    for n in counts:
        with tempfile.TemporaryDirectory() as barrier:
            cmd = [sys.executable, "-c",
                   "import sys, json; from ddlib.bench import _packed_worker; "
                   "print(json.dumps(_packed_worker(*sys.argv[1:])))",
                   barrier, str(n), str(seconds), device, precision, str(int(compile)),
                   str(int(tiny))]
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=_source_env()) for _ in range(n)]
            results = []
            for p in procs:
                stdout, stderr = p.communicate()
                if p.returncode != 0:
                    raise RuntimeError(f"packed worker failed: {stderr.strip()[-800:]}")
                results.append(json.loads(stdout.strip().splitlines()[-1]))
        total = sum(r["img_per_s"] for r in results)
        out[str(n)] = {"total_img_per_s": round(total, 1),
                       "per_run_img_per_s": [r["img_per_s"] for r in results]}
        out["best_jobs_per_gpu"] = int(max((k for k in out if k != "best_jobs_per_gpu"),
                                           key=lambda k: out[k]["total_img_per_s"]))
        say(f"  {n} run(s) at once: {total:9.1f} img/s in total")
        if on_count is not None:
            on_count(dict(out))
    return out


def _packed_worker(barrier: str, n: str, seconds: str, device: str, precision: str,
                   compile: str, tiny: str) -> dict[str, float]:
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    shape = TINY if tiny == "1" else FULL
    src = _Source(dev, shape["batch"], shape["size"])
    step = _stepper(*_model(True, dev, shape["width"]), dev, precision, compile == "1")
    for _ in range(3):
        step(*src.ours())
    _sync(dev)
    Path(barrier, str(os.getpid())).touch()
    while len(os.listdir(barrier)) < int(n):
        time.sleep(0.05)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < float(seconds):
        for _ in range(5):  # a few steps between clock reads; the sync is the only wait
            step(*src.ours())
        _sync(dev)
        done += 5
    return {"img_per_s": round(done * src.batch / (time.perf_counter() - start), 1)}


def gpu_check(out_dir: str | Path, *, budget_s: float | None = None, dry_run: bool = False,
              parts: tuple[str, ...] = GPU_PARTS, part_seconds: dict[str, float] | None = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """The GPU check of benchmarks/gpu-check.sh: 2 rounds of the paper profile with the
    projected full run, step rates on CUDA (ours vs the toolbox loop with workers, fp32 and
    bf16, compiled and not), and 1/2/4/8 packed runs. Each part of `parts` runs, in that
    order, in a process of its own that is killed with its children when it overruns its
    seconds (`part_seconds`, default PART_SECONDS); a part starts only when those seconds
    fit in what is left of `budget_s` (default CALL_SECONDS; unlimited in a dry run). The
    JSON and the table are rewritten when a part starts and ends and after each paper round
    and packed count, so a kill keeps what was measured; a JSON already in `out_dir` (a
    previous call's) is added to. `dry_run`: tiny, on the CPU (tests)."""
    unknown = sorted(set(parts) - set(GPU_PARTS))
    if unknown:
        raise ValueError(f"--parts {unknown} unknown; choose from {list(GPU_PARTS)}")
    seconds = {**(dict.fromkeys(GPU_PARTS, DRY_PART_SECONDS) if dry_run else PART_SECONDS),
               **(part_seconds or {})}
    budget_s = budget_s if budget_s is not None else (float("inf") if dry_run else CALL_SECONDS)
    path = Path(out_dir) / "gpu-check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = _read_report(path)
    report.update(torch=torch.__version__, dry_run=dry_run)
    for name in (p for p in GPU_PARTS if p in parts):
        limit = seconds[name]
        left = budget_s - (time.perf_counter() - start)
        if left < limit:
            report["errors"][name] = (f"skipped: {left:.0f} s of this call's {budget_s:.0f} s "
                                      f"left, under its {limit:.0f} s; run it in a call of "
                                      f"its own: bash benchmarks/gpu-check.sh --parts {name}")
            _write_report(path, report)
            say(f"== {name}: {report['errors'][name]}")
            continue
        for measured in ("parts", "ran_on", "part_seconds"):  # an earlier call's are redone
            report[measured].pop(name, None)
        report["errors"][name] = f"running: killed if not done within {limit:.0f} s"
        _write_report(path, report)
        say(f"== {name} (at most {limit:.0f} s)")
        began = time.perf_counter()
        code = _run_part(name, path.parent, dry_run, limit)
        report = _read_report(path)  # what the part wrote
        report["part_seconds"][name] = round(time.perf_counter() - began, 1)
        if code is None:
            kept = ("its numbers so far are kept" if name in report["parts"]
                    else "it measured nothing")
            report["errors"][name] = f"killed after its {limit:.0f} s budget; {kept}"
        elif report["errors"].get(name, "").startswith("running"):  # died without a word
            report["errors"][name] = f"its process exited with status {code}"
        _write_report(path, report)
        if name in report["errors"]:
            say(f"   {name}: {report['errors'][name]}")
    say(_table(report))
    return report


def _run_part(name: str, out_dir: Path, dry_run: bool, limit: float) -> int | None:
    """Run one part in a session of its own; its exit status, None when it was killed at
    `limit` seconds (with every process it started: packed runs, compile workers)."""
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; from ddlib.bench import gpu_check_part; "
                             "gpu_check_part(sys.argv[1], sys.argv[2], sys.argv[3] == '1')",
                             name, str(out_dir), str(int(dry_run))],
                            env=_source_env(), start_new_session=True)
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        return None
    finally:  # also when this process is interrupted
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def gpu_check_part(name: str, out_dir: str | Path, dry_run: bool) -> None:
    """One part of `gpu_check`, in this process: its numbers go into the JSON in `out_dir`
    as they come; an exception is recorded there and exits with status 1."""
    path = Path(out_dir) / "gpu-check.json"
    cuda = torch.cuda.is_available() and not dry_run
    device = "cuda" if cuda else "cpu"

    def record(values: dict[str, Any], *, error: str | None = None, done: bool = False) -> None:
        report = _read_report(path)
        report.update(device=torch.cuda.get_device_name(0) if cuda else "cpu (dry run)")
        if cuda:
            report["bf16_supported"] = torch.cuda.is_bf16_supported()
        if values:
            report["parts"][name] = values
            report["ran_on"][name] = report["device"]
        if error is not None:
            report["errors"][name] = error
        elif done:
            report["errors"].pop(name, None)
        _write_report(path, report)

    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "paper_rounds": lambda: paper_rounds(device=device, smoke=dry_run,
                                             compile="off" if dry_run else "auto",
                                             on_round=record),
        "step_rates": lambda: step_rates(
            device=device, compile_modes=(False,) if dry_run else (False, True),
            precisions=("fp32",) if dry_run else ("fp32", "bf16"), tiny=dry_run,
            workers=0 if dry_run else 8, steps=2 if dry_run else 50, repeats=1,
            max_seconds=1 if dry_run else 10),
        "packed": lambda: packed_rates((1, 2) if dry_run else PACKED,
                                       seconds=1 if dry_run else 10, device=device,
                                       compile=not dry_run, tiny=dry_run, on_count=record),
    }
    try:
        values = runs[name]()
    except Exception as err:  # noqa: BLE001 - recorded for the report, then a failed exit
        record({}, error=f"{type(err).__name__}: {err}")
        print(f"{name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    record(values, done=True)


def _read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("parts", "errors", "ran_on", "part_seconds"):
        report.setdefault(key, {})
    return report


def _write_report(path: Path, report: dict[str, Any]) -> None:
    """The JSON and its table, each replaced whole: a kill mid-write leaves the last one."""
    for target, text in ((path, json.dumps(report, indent=1) + "\n"),
                         (path.with_suffix(".txt"), _table(report))):
        partial = target.with_name(f".{target.name}.partial")
        partial.write_text(text)
        os.replace(partial, target)


def _table(report: dict[str, Any]) -> str:
    devices = sorted(set(report["ran_on"].values())) or [report.get("device", "?")]
    lines = [f"GPU check on {' and '.join(devices)} (torch {report.get('torch', '?')}); "
             "seconds per part: " + ", ".join(f"{name} {s:.0f}" for name, s in
                                              report["part_seconds"].items())]
    if len(devices) > 1:
        lines.append("  parts ran on: " + ", ".join(f"{name} {device}" for name, device in
                                                    report["ran_on"].items()))
    rounds = report["parts"].get("paper_rounds")
    if rounds:
        projected = (f"projected full run {rounds['projected_full_run_s'] / 60:.1f} min"
                     if rounds["projected_full_run_s"] is not None
                     else "no projection (it needs 2 rounds)")
        lines.append(f"  paper iCaRL+DD rounds {rounds['round_s']} s -> {projected} "
                     f"({rounds['precision']}, compiled {rounds['compiled']}); classifier "
                     f"steps {rounds['classifier_img_per_s']} img/s")
    rates = report["parts"].get("step_rates", {})
    for name, rate in rates.items():
        lines.append(f"  {name:<24} {rate:10.1f} img/s")
    if "toolbox fp32" in rates:
        best = max(v for k, v in rates.items() if k.startswith("ours"))
        lines.append(f"  best of ours / toolbox fp32 = {best / rates['toolbox fp32']:.2f}x")
    packed = report["parts"].get("packed")
    if packed:
        lines.append("  packed runs: " + ", ".join(
            f"{k}: {v['total_img_per_s']:.0f} img/s" for k, v in packed.items()
            if k != "best_jobs_per_gpu") + f"; best --jobs-per-gpu {packed['best_jobs_per_gpu']}")
    for name, why in report["errors"].items():
        lines.append(f"  {name}: {why}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ command

def add_arguments(parser: Any) -> None:
    """Flags of `python -m ddlib bench`."""
    parser.add_argument("--steps", type=lambda t: int_flag(t, 1, 10**6), default=10,
                        help="timed training steps per pipeline (default: 10)")
    parser.add_argument("--repeats", type=lambda t: int_flag(t, 1, 10**6), default=3,
                        help="rates are the best of this many interleaved measurements")
    parser.add_argument("--threads", type=lambda t: int_flag(t, 0, 1024), default=0,
                        help="torch threads; 0 = torch's default, all cores: a measurement "
                             "of the machine, not a stored run (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--workers", type=lambda t: int_flag(t, 0, 1024), default=0,
                        help="DataLoader workers of the toolbox loop")
    parser.add_argument("--compile", action="store_true",
                        help="also time compiled steps and (with --e2e) a compiled run")
    parser.add_argument("--e2e", action="store_true",
                        help="also one cpu-profile iCaRL+DD run, ours vs the reference loop")
    parser.add_argument("--quick", action="store_true",
                        help="end to end with 2 epochs per training stage")
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")
    parser.add_argument("--gpu-check", action="store_true",
                        help="instead: the GPU check (benchmarks/gpu-check.sh)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks",
                        help="folder of the GPU check's JSON and table (default $OUT)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"GPU check: the call's seconds; a part starts only if its own "
                             f"fit in what is left (default {CALL_SECONDS}; dry run: no limit)")
    parser.add_argument("--parts", default=",".join(GPU_PARTS),
                        help="GPU check parts, comma-separated, run in the order "
                             f"{','.join(GPU_PARTS)} (a second call runs the skipped ones)")
    parser.add_argument("--dry-run", action="store_true", help="GPU check, tiny, on the CPU")


def main(args: dict[str, Any]) -> int:
    """`python -m ddlib bench`."""
    for name in ("steps", "repeats", "threads", "workers", "budget"):
        if args[name] is not None and args[name] < (1 if name in ("steps", "repeats") else 0):
            raise ValueError(f"--{name}={args[name]} is out of range")
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    if args["gpu_check"] or args["dry_run"]:
        report = gpu_check(args["out"], budget_s=args["budget"], dry_run=args["dry_run"],
                           parts=tuple(p.strip() for p in args["parts"].split(",") if p.strip()))
        return 1 if report["errors"] else 0
    numbers: dict[str, Any] = {"machine": _machine(), "threads": torch.get_num_threads()}
    numbers["step_rates"] = step_rates(device=args["device"], workers=args["workers"],
                                       steps=args["steps"], repeats=args["repeats"],
                                       warmup=1 if args["device"] == "cpu" else 3,
                                       compile_modes=(False, True) if args["compile"] else (False,))
    if args["e2e"] or args["quick"]:
        numbers["end_to_end"] = end_to_end(quick=args["quick"], workers=args["workers"],
                                           device=args["device"], compiled=args["compile"])
    if args["json"]:
        Path(args["json"]).write_text(json.dumps(numbers, indent=1) + "\n")
    return 0


def _machine() -> dict[str, Any]:
    """CPU model and whether it has AMX (what `precision=auto` looks at)."""
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"cpu": model, "amx_bf16": engine.cpu_has_amx(), "torch": torch.__version__,
            "auto_precision_cpu": engine.resolve_precision("auto", "cpu")}
