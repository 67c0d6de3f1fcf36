"""The one training loop (classifier, expert, extra stages) and batched inference.

Data stay on the training device as uint8; each step augments its mini-batch in place
(`augment.Augment`). On CUDA the forward runs under bf16 autocast; losses are float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from .augment import Augment
from .utils import progress

LossFn = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]  # loss, detached parts


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

    train_x: Tensor  # uint8 (N, 3, H, W)
    train_y: Tensor  # int64 (N,)
    test_x: Tensor
    test_y: Tensor
    augment: Augment
    channels_last: bool = False

    @classmethod
    def from_arrays(cls, data, device: torch.device, *, pad: int, channels_last: bool,
                    resized_crop: bool = False) -> DeviceData:
        def images(x: np.ndarray) -> Tensor:
            return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).contiguous()

        return cls(images(data.train_x), torch.from_numpy(data.train_y).to(device),
                   images(data.test_x), torch.from_numpy(data.test_y).to(device),
                   Augment(data.mean, data.std, pad=pad, device=device,
                           resized_crop=resized_crop), channels_last)

    def layout(self, x: Tensor) -> Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


def train(model: nn.Module, data: DeviceData, indices: np.ndarray | Callable[[int], np.ndarray],
          loss_fn: LossFn, schedule: Schedule, *, generator: torch.Generator,
          params: Iterable[nn.Parameter] | None = None, desc: str = "train",
          show_progress: bool = True) -> list[dict[str, float]]:
    """Train `model` on `data.train_x[indices]` (or `indices(epoch)`); returns per-epoch means
    of the loss parts. Raises FloatingPointError naming `desc` and the epoch on NaN/inf."""
    device = data.train_x.device
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum,
                          weight_decay=schedule.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(schedule.milestones), gamma=0.1)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    history: list[dict[str, float]] = []
    model.train()
    for epoch in progress(range(schedule.epochs), enabled=show_progress, desc=desc):
        chosen = indices(epoch) if callable(indices) else indices
        chosen = torch.as_tensor(chosen, device=device)
        order = chosen[torch.randperm(len(chosen), generator=generator).to(device)]
        sums: dict[str, Tensor] = {}
        steps = 0
        for start in range(0, len(order), schedule.batch_size):
            batch = order[start:start + schedule.batch_size]
            x = data.layout(data.augment.train(data.train_x[batch], generator))
            with autocast:
                loss, parts = loss_fn(x, data.train_y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for key, value in {"loss": loss.detach(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value.float()
            steps += 1
        sched.step()
        means = {k: float(v) / max(steps, 1) for k, v in sums.items()}  # one sync per epoch
        if not np.isfinite(means.get("loss", 0.0)):
            raise FloatingPointError(f"non-finite loss in {desc}, epoch {epoch + 1}: {means}")
        history.append(means)
    model.eval()
    return history


@torch.no_grad()
def infer(model: nn.Module, data: DeviceData, images: Tensor, *, flip: bool = False,
          batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """(features, logits) of uint8 `images` in eval mode with the test transform (float32)."""
    model.eval()
    feats, logits = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.device.type == "cuda")
    for start in range(0, len(images), batch_size):
        x = data.augment.normalize(images[start:start + batch_size])
        if flip:
            x = x.flip(3)
        with autocast:
            f, z = model(data.layout(x))
        feats.append(f.float())
        logits.append(z.float())
    return torch.cat(feats), torch.cat(logits)
