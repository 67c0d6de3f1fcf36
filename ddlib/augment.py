"""Batched image transforms on the training device (PROTOCOL 1.5).

Images live on the device as uint8 (N, 3, H, W); one call augments a whole mini-batch with
tensor ops: zero-pad + random crop (CIFAR) or random-resized crop (ImageNet), horizontal
flip with p = 0.5, per-channel normalisation. No per-image Python or PIL work. The pad-crop
gathers pixels in (B, H, W, C) order, so the batch comes out channels-last, the layout the
convolutions prefer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class Augment:
    """Training and test transforms for one dataset on one device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], *, pad: int,
                 device: torch.device, resized_crop: bool = False) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.pad = pad
        self.resized_crop = resized_crop  # instead of pad-crop; output keeps the stored size

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> normalised float32; the test-time transform."""
        return (images.float() - self.mean) / self.std

    def train(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Random pad-crop (or random-resized crop) and flip of a uint8 batch, then
        normalisation."""
        b, _, h, w = images.shape
        if self.resized_crop:
            return self.normalize(random_resized_crop(images, generator, size=(h, w)))
        dev = images.device
        if self.pad:
            padded = F.pad(images, (self.pad,) * 4)  # zeros = black, as torchvision pads
            off_y = _randint(generator, 2 * self.pad + 1, (b, 1), dev)
            off_x = _randint(generator, 2 * self.pad + 1, (b, 1), dev)
            rows = off_y + torch.arange(h, device=dev)  # (B, H)
            cols = off_x + torch.arange(w, device=dev)  # (B, W)
            batch = torch.arange(b, device=dev)[:, None, None]
            images = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        flip = _rand(generator, (b,), dev) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return self.normalize(images)


def _rand(generator: torch.Generator, size: tuple[int, ...], device: torch.device) -> Tensor:
    """U[0, 1) draws made where `generator` lives (torch refuses a draw on any other
    device), then moved to the images' `device`."""
    return torch.rand(size, generator=generator, device=generator.device).to(device)


def _randint(generator: torch.Generator, high: int, size: tuple[int, ...],
             device: torch.device) -> Tensor:
    """Integers in [0, high), drawn as `_rand` draws."""
    return torch.randint(0, high, size, generator=generator, device=generator.device).to(device)


def random_resized_crop(images: Tensor, generator: torch.Generator, *, size: tuple[int, int],
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> Tensor:
    """torchvision's RandomResizedCrop (+ horizontal flip with p = 0.5) for a uint8 batch
    (B, 3, H, W): float32 (B, 3, *size) on the 0..255 scale, not normalised.

    Per image, as torchvision: 10 tries of area fraction ~ U(scale) and log aspect ratio ~
    U(log ratio); the first box that fits wins, at a uniform integer position; when none
    fits, the centre crop of the whole image with its ratio clamped to `ratio`. The box (and
    the flip, a negative x scale) becomes one affine map; bilinear `grid_sample` resamples.
    """
    b, _, h, w = images.shape
    dev, tries = images.device, 10
    area = h * w * (scale[0] + (scale[1] - scale[0])
                    * _rand(generator, (b, tries), dev))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo)
                       * _rand(generator, (b, tries), dev))
    cw, ch = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = fits.int().argmax(dim=1, keepdim=True)  # first fitting try (0 if none)
    found = fits.any(dim=1)
    if w / h < ratio[0]:  # fallback box: torchvision's clamped centre crop
        fw, fh = w, round(w / ratio[0])
    elif w / h > ratio[1]:
        fw, fh = round(h * ratio[1]), h
    else:
        fw, fh = w, h
    cw = torch.where(found, cw.gather(1, first).squeeze(1), float(fw))
    ch = torch.where(found, ch.gather(1, first).squeeze(1), float(fh))
    top = torch.floor(_rand(generator, (b,), dev) * (h - ch + 1))
    left = torch.floor(_rand(generator, (b,), dev) * (w - cw + 1))
    top = torch.where(found, top, torch.div(h - ch, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(w - cw, 2, rounding_mode="floor"))
    sign = torch.ones(b, device=dev)
    if flip:
        sign = torch.where(_rand(generator, (b,), dev) < 0.5, -1.0, 1.0)
    # Output coordinates in [-1, 1] -> the box's span in the input's normalised coordinates
    # (align_corners=False: -1 and 1 are the outer pixel edges).
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = sign * cw / w
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta, [b, 3, *size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)
