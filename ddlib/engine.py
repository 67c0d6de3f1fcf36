"""The one training loop (classifier, expert, extra stages) and batched inference.

Data stay on the training device as uint8; each step augments its mini-batch in place
(`augment.Augment`). Training images too large for the device (ImageNet-1k: 193 GB at 224)
stay in their memory-mapped cache on disk and are read a few batches ahead by threads.

Precision: every forward runs under bf16 or fp16 autocast when `DeviceData.precision` says
so (`resolve_precision` decides what `auto` means on a device); weights, optimiser state and
losses stay float32, and fp16 steps go through a GradScaler (fp16's range would flush small
gradients to zero). With `DeviceData.compile`, every network's backbone in a training step
(student, teachers, expert) runs through one `torch.compile` per run (CUDA graphs on CUDA);
heads and loss terms run eagerly (`_Captured`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed
from .augment import Augment
from .models import BackboneCall, backbones_through
from .utils import progress

# Training images go to a CUDA device when they take at most this share of its free memory
# (models, activations and the test images need the rest).
DEVICE_DATA_SHARE = 0.5
READ_AHEAD = 4  # batches read from disk at once (and threads reading them)
LossFn = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]  # loss, detached parts
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA GPUs with bf16 tensor cores
COMPILE_SETTINGS = ("auto", "on", "off")


def resolve_precision(name: str, device: torch.device | str) -> str:
    """What `precision` `name` runs as on `device` ("auto", "cpu", "cuda", "cuda:1", or a
    torch.device): "fp32", "bf16" or "fp16" (`explain_precision` says why)."""
    return explain_precision(name, device)[0]


def explain_precision(name: str, device: torch.device | str) -> tuple[str, str]:
    """(precision, why) of `precision` `name` on `device`. The one place where `auto` is
    decided, by what the device computes natively:

    - a CUDA device of compute capability 8.0 or later (Ampere on): bf16. Not
      torch.cuda.is_bf16_supported(), which says True on a T4 (7.5) through emulation;
    - a CUDA device of capability 7.x (V100, T4): fp16, whose tensor cores they have; every
      loss term and UCIR's cosine head run in float32 (losses.py, models.CosineHead), and the
      GradScaler keeps small gradients;
    - an older CUDA device: fp32;
    - a CPU: bf16 when its flags include `amx_bf16` (/proc/cpuinfo; Intel Sapphire Rapids and
      later), where a ResNet-32 step ran twice as fast in bf16; elsewhere (AVX2/AVX-512) bf16
      autocast only adds conversions, so fp32.
    Never raises for a missing CUDA device (plans are made on machines without one)."""
    if name not in PRECISIONS:
        raise ValueError(f"precision={name!r} is unknown; choose one of {list(PRECISIONS)}")
    if name != "auto":
        return name, "set explicitly"
    kind = torch.device(device).type if str(device) != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "fp32", "no CUDA device on this machine"
        capability = torch.cuda.get_device_capability(device if str(device) != "auto" else None)
        shown = ".".join(map(str, capability))
        if capability >= NATIVE_BF16_CAPABILITY:
            return "bf16", f"CUDA compute capability {shown} >= 8.0 has native bf16"
        if capability[0] == 7:
            return "fp16", f"CUDA compute capability {shown} < 8.0 has no native bf16"
        return "fp32", f"CUDA compute capability {shown} has no fp16 tensor cores"
    if cpu_has_amx():
        return "bf16", "this CPU has AMX bf16 tiles"
    return "fp32", "this CPU has no AMX bf16 tiles"


@functools.lru_cache(maxsize=1)
def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has AMX bf16 tiles: `amx_bf16` among the flags of /proc/cpuinfo
    (False where there is no such file, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    return any("amx_bf16" in line.split() for line in text.splitlines()
               if line.startswith("flags"))


def tune_backend(device: torch.device) -> None:
    """On CUDA, cuDNN times its convolution algorithms once per input shape and keeps the
    fastest (a run has a handful of shapes: the batch, an epoch's last batch, inference)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def resolve_compile(setting: str, device: torch.device) -> bool:
    """Whether `train` compiles the run's backbone: `auto` = on CUDA only (where launch
    overhead dominates a small network's step), `on` = on any device (CPU: inductor's C++
    code), `off` = never. On the CPU, compiling did not repay its compile in a `cpu`-profile
    run (README, What runs where; `make bench` measures it on the machine at hand)."""
    if setting not in COMPILE_SETTINGS:
        raise ValueError(f"compile={setting!r} is unknown; choose one of {list(COMPILE_SETTINGS)}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


@dataclass(frozen=True)
class Schedule:
    """SGD with step decay (÷10 at each milestone); a fresh optimiser every call."""

    epochs: int
    lr: float
    milestones: tuple[int, ...] = ()
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128


@dataclass
class DeviceData:
    """A dataset's images and labels on the training device, plus its transforms."""

    train_x: Tensor | np.ndarray  # uint8 (N, 3, H, W) on the device, or (N, H, W, 3) on disk
    train_y: Tensor  # int64 (N,)
    test_x: Tensor
    test_y: Tensor
    augment: Augment
    channels_last: bool = False
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (resolved, see resolve_precision)
    compile: bool = False    # train() runs the backbones compiled
    _captured: _Captured | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", *AUTOCAST_DTYPES):
            raise ValueError(f"precision={self.precision!r}: DeviceData takes fp32, bf16 or "
                             "fp16 (resolve 'auto' with engine.resolve_precision)")

    @classmethod
    def from_arrays(cls, data, device: torch.device, *, pad: int, channels_last: bool,
                    resized_crop: bool = False, precision: str = "fp32",
                    compile: str = "off") -> DeviceData:
        """`precision` and `compile` take the RunConfig values (auto resolved here)."""
        train_x = (_to_device(data.train_x, device) if _fits(data.train_x, device)
                   else data.train_x)
        return cls(train_x, torch.from_numpy(data.train_y).to(device),
                   _to_device(data.test_x, device), torch.from_numpy(data.test_y).to(device),
                   Augment(data.mean, data.std, pad=pad, device=device,
                           resized_crop=resized_crop), channels_last,
                   resolve_precision(precision, device), resolve_compile(compile, device))

    @property
    def device(self) -> torch.device:
        return self.test_x.device

    def captured(self, desc: str) -> _Captured:
        """The run's compiled backbone call, built by the first stage that trains
        (`desc`): one per run, as this object is."""
        if self._captured is None:
            self._captured = _Captured(self.device, desc)
        return self._captured

    @property
    def on_disk(self) -> bool:
        """Whether the training images are read from disk per batch."""
        return not isinstance(self.train_x, Tensor)

    def train_images(self, idx: np.ndarray | Tensor) -> Tensor:
        """uint8 (B, 3, H, W) training images at `idx`, on the device."""
        if not self.on_disk:
            return self.train_x[torch.as_tensor(idx, device=self.device)]
        return self._upload(self._read(idx))

    def batches(self, order: Tensor, batch_size: int, shard: Callable[[int], slice] | None = None
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) of consecutive `batch_size` slices of `order`. Images on disk
        are read READ_AHEAD batches ahead by as many threads (disk reads overlap each other
        and the training step); they arrive in order, so training is the same as from memory.
        `shard(n)` (DDP): the part of an n-image batch this rank trains on; images on disk are
        read for it alone, the rest of the batch is zeros (kept so that the augmentation
        draws the whole batch's random numbers, as every rank must)."""
        slices = [slice(start, start + batch_size) for start in range(0, len(order), batch_size)]
        if not self.on_disk:
            for part in slices:
                batch = order[part]
                yield self.train_x[batch], self.train_y[batch]
            return
        host_order = order.cpu().numpy()
        with ThreadPoolExecutor(max_workers=READ_AHEAD) as readers:
            keep = [slice(None) if shard is None else shard(len(host_order[part]))
                    for part in slices]
            ahead = deque(readers.submit(self._read, host_order[part][kept])
                          for part, kept in zip(slices[:READ_AHEAD], keep))
            for i, part in enumerate(slices):
                images = self._upload(ahead.popleft().result())
                if i + READ_AHEAD < len(slices):
                    ahead.append(readers.submit(self._read, host_order[slices[i + READ_AHEAD]]
                                                [keep[i + READ_AHEAD]]))
                if shard is not None:
                    whole = images.new_zeros((len(order[part]), *images.shape[1:]))
                    whole[keep[i]] = images
                    images = whole
                yield images, self.train_y[order[part]]

    def _read(self, idx: np.ndarray | Tensor) -> Tensor:
        """The images at `idx` from disk, as a (pinned, on CUDA) NHWC host tensor."""
        idx = idx.cpu().numpy() if isinstance(idx, Tensor) else np.asarray(idx)
        images = torch.from_numpy(np.ascontiguousarray(self.train_x[idx]))
        return images.pin_memory() if self.device.type == "cuda" else images

    def _upload(self, images: Tensor) -> Tensor:
        return images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)

    def layout(self, x: Tensor) -> Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def autocast(self) -> torch.autocast:
        """bf16 or fp16 autocast on this device as `precision` says; a no-op for fp32."""
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES.get(self.precision),
                              enabled=self.precision in AUTOCAST_DTYPES)


def _fits(images: np.ndarray, device: torch.device) -> bool:
    """Whether uint8 `images` go to the device: on CUDA when they fit DEVICE_DATA_SHARE of
    this process's share of its memory; on the CPU unless they are a memory-mapped cache
    (left on disk)."""
    if device.type == "cuda":
        return images.nbytes <= DEVICE_DATA_SHARE * distributed.device_memory_share(device)
    return not isinstance(images, np.memmap)


def _to_device(images: np.ndarray, device: torch.device, chunk: int = 4096) -> Tensor:
    """NHWC uint8 array -> NCHW tensor on `device`, copied in chunks so that a memory-mapped
    array is never read into host memory whole."""
    out = torch.empty((len(images), images.shape[3], *images.shape[1:3]), dtype=torch.uint8,
                      device=device)
    for start in range(0, len(images), chunk):
        part = torch.from_numpy(np.array(images[start:start + chunk]))
        out[start:start + chunk] = part.to(device).permute(0, 3, 1, 2)
    return out


def train(model: nn.Module, data: DeviceData, indices: np.ndarray | Callable[[int], np.ndarray],
          loss_fn: LossFn, schedule: Schedule, *, generator: torch.Generator,
          params: Iterable[nn.Parameter] | None = None, desc: str = "train",
          show_progress: bool = True) -> list[dict[str, float]]:
    """Train `model` on the training images at `indices` (or `indices(epoch)`); returns
    per-epoch means of the loss parts. Raises FloatingPointError naming `desc` and the epoch
    on NaN/inf."""
    device = data.device
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum,
                          weight_decay=schedule.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(schedule.milestones), gamma=0.1)
    # fp16: the loss scaled up before backward, steps with inf/NaN gradients skipped; a
    # disabled scaler passes loss and step through unchanged
    scaler = torch.amp.GradScaler(device.type, enabled=data.precision == "fp16")
    ddp = distributed.active()  # torchrun, several ranks: see _replicated
    if data.compile and ddp:
        warnings.warn("compile is off under DDP: steps run eagerly", RuntimeWarning, stacklevel=2)
    captured = data.captured(desc) if data.compile and not ddp else None

    def forward_backward(x: Tensor, y: Tensor,
                         weight: float | None) -> tuple[Tensor, dict[str, Tensor]]:
        """One batch's loss and its backward, from zeroed gradients."""
        with data.autocast():
            loss, parts = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss if weight is None else loss * weight).backward()
        return loss, parts

    history: list[dict[str, float]] = []
    model.train()
    with _replicated(model):
        for epoch in progress(range(schedule.epochs), enabled=show_progress and
                              distributed.is_main(), desc=desc):
            chosen = indices(epoch) if callable(indices) else indices
            chosen = torch.as_tensor(chosen, device=device)
            # drawn where the generator lives: torch refuses a CPU draw from a CUDA generator
            order = chosen[torch.randperm(len(chosen), generator=generator,
                                          device=generator.device).to(device)]
            sums: dict[str, Tensor] = {}
            steps = 0
            for images, labels in data.batches(order, schedule.batch_size, shard=_shard if ddp
                                               else None):
                x = data.augment.train(images, generator)
                share = 1.0  # this rank's share of the global batch
                if ddp:  # augmented whole (same draws as one process), trained on a shard
                    if len(labels) < distributed.world_size():
                        continue  # a last batch smaller than the ranks is dropped
                    part = _shard(len(labels))
                    share = (part.stop - part.start) / len(labels)
                    x, labels = x[part], labels[part]
                x = data.layout(x)
                # DDP averages the ranks' gradients; weighting each by its share makes that
                # the global batch's mean when a batch splits unevenly (else the factor is 1)
                weight = share * distributed.world_size() if ddp else None
                if captured is not None and len(labels) == schedule.batch_size:
                    loss, parts = captured.run(forward_backward, x, labels, weight, desc=desc)
                else:  # eager; so is the epoch's last, smaller batch: one shape compiled
                    loss, parts = forward_backward(x, labels, weight)
                scaler.step(opt)
                scaler.update()
                for key, value in {"loss": loss.detach(), **parts}.items():
                    value = value.float() * share if ddp else value.float()
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
            sched.step()
            if ddp and sums:  # the global batches' means, as one process logs them
                total = distributed.all_reduce_sum(torch.stack([sums[k] for k in sorted(sums)]))
                sums = dict(zip(sorted(sums), total))
            means = {k: float(v) / max(steps, 1) for k, v in sums.items()}  # one sync per epoch
            if not np.isfinite(means.get("loss", 0.0)):
                raise FloatingPointError(f"non-finite loss in {desc}, epoch {epoch + 1}: {means}")
            history.append(means)
    model.eval()
    return history


def _shard(size: int) -> slice:
    return distributed.shard(size, distributed.rank(), distributed.world_size())


@contextlib.contextmanager
def _replicated(model: nn.Module) -> Iterator[None]:
    """Under DDP (`ddlib.distributed`), every `model(...)` call inside runs through one
    DistributedDataParallel wrapper (built per train() call: the head grows every round).
    The loss functions call the model itself (a method's step, the expert's loss), so its
    `forward` is routed to the wrapper, which calls the original back. BatchNorm statistics
    are per rank (torch's SyncBatchNorm is CUDA-only): on exit every rank takes rank 0's
    weights and statistics. Without DDP it does nothing."""
    if not distributed.active():
        yield
        return
    device = next(model.parameters()).device
    wrapper = nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)
    inner, inside = model.forward, False

    def routed(*args, **kwargs):
        nonlocal inside
        if inside:  # the wrapper calling the module
            return inner(*args, **kwargs)
        inside = True
        try:
            return wrapper(*args, **kwargs)
        finally:
            inside = False

    model.forward = routed
    try:
        yield
    finally:
        del model.forward
        distributed.broadcast_module(model)


class _Captured:
    """One torch.compile of the backbones' forward for a whole run (`DeviceData.captured`).
    The student, its teachers and DD's expert share the backbone's architecture, and the
    training batches their shape, so dynamo compiles one graph per mode (training; frozen,
    in eval mode) and every network, stage and round reuses it (their weights are the
    graph's inputs); the growing heads and the loss terms run eagerly. When compiling fails
    (no triton, no C++ compiler, an unsupported op, a Python dynamo does not support) it
    warns naming the stage, the device and the reason, and the run goes on eagerly: in
    torch.compile() itself, at a first call (tracing, code generation) or in a first
    backward (aot_autograd compiles the backward graph lazily, there)."""

    def __init__(self, device: torch.device, desc: str) -> None:
        torch._dynamo.reset()  # a run starts from empty caches (a notebook runs several)
        self.device = device
        self.fn: BackboneCall | None = None
        try:
            self.fn = compiled(run_backbone, device)
        except Exception as err:  # noqa: BLE001 - any compile failure falls back, said why
            self._fall_back(err, desc)

    def run(self, step: Callable[..., tuple[Tensor, dict[str, Tensor]]], *args, desc: str
            ) -> tuple[Tensor, dict[str, Tensor]]:
        """`step(*args)`, one batch's forward and backward, its networks' backbones through
        the compiled call (or eagerly, once compiling has failed)."""
        if self.fn is None:
            return step(*args)
        if self.device.type == "cuda":  # a new iteration for CUDA graph trees
            torch.compiler.cudagraph_mark_step_begin()
        try:
            with backbones_through(self.fn):
                return step(*args)
        except Exception as err:  # noqa: BLE001 - any compile failure falls back, said why
            self._fall_back(err, desc)
            # after a failed backward this batch's forward has run twice: BatchNorm's running
            # statistics took it twice (one batch, once per run)
            return step(*args)

    def _fall_back(self, err: Exception, desc: str) -> None:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        warnings.warn(f"{desc} on {self.device}: torch.compile failed "
                      f"({type(err).__name__}: {reason}); training eagerly",
                      RuntimeWarning, stacklevel=4)
        self.fn = None


def run_backbone(backbone: nn.Module, x: Tensor) -> Tensor:
    """The function `compiled` compiles once per run (and `bench` times)."""
    return backbone(x)


def compiled(fn: Callable, device: torch.device) -> Callable:
    """torch.compile of `fn` (the run's backbone call, `run_backbone`). On CUDA
    `reduce-overhead` captures it in CUDA graphs: a ResNet-32 step is ~600 small kernels,
    launch-bound without them."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(fn, mode=mode, dynamic=False)


@torch.no_grad()
def infer(model: nn.Module, data: DeviceData, images: Tensor, idx: Tensor | None = None, *,
          flip: bool = False, batch_size: int = 512, autocast: bool = True
          ) -> tuple[Tensor, Tensor]:
    """(features, logits) of uint8 `images` (those at `idx` when given) in eval mode with the
    test transform (float32). `idx` is gathered a batch at a time, so that a subset of the
    test images is never copied whole (ImageNet-1k's: 7.5 GB). `autocast=False`: a float32
    forward whatever `data.precision`, for class statistics (herding, class means and
    centres, imprinted rows) that rank and average features which bf16 would round to 8
    bits."""
    model.eval()
    feats, logits = [], []
    for start in range(0, len(images) if idx is None else len(idx), batch_size):
        part = slice(start, start + batch_size)
        x = data.augment.normalize(images[part] if idx is None else images[idx[part]])
        if flip:
            x = x.flip(3)
        with data.autocast() if autocast else contextlib.nullcontext():
            f, z = model(data.layout(x))
        feats.append(f.float())
        logits.append(z.float())
    return torch.cat(feats), torch.cat(logits)
