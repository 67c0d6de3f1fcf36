"""`python -m ddlib bench`: images/s of one full ResNet-32 training step (batch 128, 32x32).

(a) ours: uint8 images on the device, batched crop/flip/normalise, channels-last model;
(b) the limit: the same model fed ready-made tensors (data cost zero);
(c) the common toolbox way: torchvision DataLoader + per-image PIL transforms, model in the
    default memory format.
A benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augment
from .data import CIFAR_MEAN, CIFAR_STD
from .models import LinearHead, Net, ResNet32

BATCH = 128


def _model(channels_last: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = Net(ResNet32(), LinearHead(64, 100))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net.train(), torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9,
                                        weight_decay=5e-4)


def _step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(net(x)[1], y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _rate(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def main(*, steps: int = 10, repeats: int = 3, threads: int = 0) -> dict[str, float]:
    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20 * BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, len(images))
    gen = torch.Generator().manual_seed(0)
    aug = Augment(CIFAR_MEAN, CIFAR_STD, pad=4, device=torch.device("cpu"))
    x_u8 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels)
    cursor = iter(range(10**9))

    def batch_ids() -> torch.Tensor:
        start = (next(cursor) * BATCH) % (len(images) - BATCH)
        return torch.arange(start, start + BATCH)

    net_a, opt_a = _model(channels_last=True)

    def ours() -> None:
        idx = batch_ids()
        x = aug.train(x_u8[idx], gen).contiguous(memory_format=torch.channels_last)
        _step(net_a, opt_a, x, y_all[idx])

    fixed = aug.train(x_u8[:BATCH], gen).contiguous(memory_format=torch.channels_last)
    net_b, opt_b = _model(channels_last=True)

    def premade() -> None:
        _step(net_b, opt_b, fixed, y_all[:BATCH])

    reference, net_c, opt_c = _reference_loader(images, labels), *_model(channels_last=False)
    batches = iter(())

    def toolbox() -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(reference)
            x, y = next(batches)
        _step(net_c, opt_c, x, y)

    aug_only = _rate(lambda: aug.train(x_u8[batch_ids()], gen), steps)
    variants = {"ours": ours, "premade": premade, "toolbox": toolbox}
    rates = {name: 0.0 for name in variants}
    for _ in range(repeats):  # interleaved, best of `repeats`: other load hits all alike
        for name, step in variants.items():
            rates[name] = max(rates[name], _rate(step, steps))
    print(f"ResNet-32, batch {BATCH}, 32x32, {torch.get_num_threads()} threads, "
          f"best of {repeats} x {steps} steps")
    print(f"(a) ours (device-side augmentation, channels-last): {rates['ours']:8.1f} img/s")
    print(f"(b) pre-made tensors (data cost zero):              {rates['premade']:8.1f} img/s")
    print(f"(c) DataLoader + PIL transforms, NCHW model:        {rates['toolbox']:8.1f} img/s")
    print(f"(a)/(b) = {rates['ours'] / rates['premade']:.3f}   "
          f"(a)/(c) = {rates['ours'] / rates['toolbox']:.3f}")
    print(f"augmentation alone: {aug_only:.0f} img/s "
          f"({1000 * BATCH / aug_only:.1f} ms of each {1000 * BATCH / rates['ours']:.0f} ms step)")
    return rates


def _reference_loader(images: np.ndarray, labels: np.ndarray):
    """torchvision's usual CIFAR pipeline: one PIL image at a time."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])

    class Arrays(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return tf(Image.fromarray(images[i])), int(labels[i])

    return DataLoader(Arrays(), batch_size=BATCH, shuffle=True, num_workers=0, drop_last=True)
