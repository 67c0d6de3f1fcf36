"""Batched image transforms on the training device (PROTOCOL 1.5).

Images live on the device as uint8 (N, 3, H, W); one call augments a whole mini-batch with
tensor ops: zero-pad + random crop, horizontal flip with p = 0.5, per-channel normalisation.
No per-image Python or PIL work. The crop gathers pixels in (B, H, W, C) order, so the batch
comes out channels-last, the layout the convolutions prefer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class Augment:
    """Training and test transforms for one dataset on one device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], *, pad: int,
                 device: torch.device) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.pad = pad

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> normalised float32; the test-time transform."""
        return (images.float() - self.mean) / self.std

    def train(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Random pad-crop and flip of a uint8 batch, then normalisation."""
        b, _, h, w = images.shape
        dev = images.device
        if self.pad:
            padded = F.pad(images, (self.pad,) * 4)  # zeros = black, as torchvision pads
            off_y = torch.randint(0, 2 * self.pad + 1, (b, 1), device=dev, generator=generator)
            off_x = torch.randint(0, 2 * self.pad + 1, (b, 1), device=dev, generator=generator)
            rows = off_y + torch.arange(h, device=dev)  # (B, H)
            cols = off_x + torch.arange(w, device=dev)  # (B, W)
            batch = torch.arange(b, device=dev)[:, None, None]
            images = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        flip = torch.rand(b, device=dev, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return self.normalize(images)
