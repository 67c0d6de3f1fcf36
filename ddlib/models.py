"""Backbones and heads (PROTOCOL 2).

`Net` = backbone -> head, returning (features, logits). The head grows each round and keeps
the rows of old classes; a fresh head of the same kind serves the expert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2, zero-pad the new channels (option A)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, *, shortcut: str,
                 last_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.last_relu = last_relu
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _ShortcutA(c_out - c_in)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out) if self.last_relu else out


class ResNet32(nn.Module):
    """CIFAR ResNet-32: three stages of five basic blocks; `width` scales 16-32-64 channels."""

    def __init__(self, *, width: float = 1.0, shortcut: str = "A",
                 last_relu: bool = True) -> None:
        super().__init__()
        chans = [max(2, round(c * width)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, chans[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0])
        blocks: list[nn.Module] = []
        c_in = chans[0]
        for stage, c_out in enumerate(chans):
            for i in range(5):
                stride = 2 if stage > 0 and i == 0 else 1
                last = stage == 2 and i == 4
                blocks.append(BasicBlock(c_in, c_out, stride, shortcut=shortcut,
                                         last_relu=last_relu or not last))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = chans[-1]
        _init_weights(self)

    def feature_map(self, x: Tensor) -> Tensor:
        """Output of the last residual block, (B, C, h, w): what Grad-CAM looks at."""
        return self.blocks(F.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


class _NoFinalReLU(nn.Module):
    """A torchvision BasicBlock without its closing ReLU (UCIR's last block, PROTOCOL 2)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        b = self.block
        out = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x)))))
        return out + (x if b.downsample is None else b.downsample(x))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 without its classifier, randomly initialised (ImageNet). Its
    shortcuts are already option B (1x1 conv + BN)."""

    def __init__(self, *, last_relu: bool = True) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if not last_relu:
            net.layer4[-1] = _NoFinalReLU(net.layer4[-1])
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                  net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_dim = 512

    def feature_map(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


def reinitialise(backbone: nn.Module) -> None:
    """Fresh weights and BN statistics for `backbone`, drawn as at construction."""
    for m in backbone.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            m.reset_parameters()
    _init_weights(backbone)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class LinearHead(nn.Module):
    """Linear classifier over all seen classes; `grow` appends rows, old rows are kept."""

    def __init__(self, in_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.weight = nn.Parameter(torch.empty(0, in_dim))
        self.bias = nn.Parameter(torch.empty(0))
        if num_classes:
            self.grow(num_classes)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def grow(self, n_new: int) -> None:
        fresh = nn.Linear(self.in_dim, n_new).to(self.weight.device)  # Kaiming-uniform rows
        nn.init.zeros_(fresh.bias)
        self.weight = nn.Parameter(torch.cat([self.weight.data, fresh.weight.data]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, fresh.bias.data]))

    def fresh(self, num_classes: int) -> LinearHead:
        """A new, independent head of the same kind (for the expert)."""
        return LinearHead(self.in_dim, num_classes).to(self.weight.device)

    def forward(self, features: Tensor) -> Tensor:
        return F.linear(features, self.weight, self.bias)


class CosineHead(nn.Module):
    """UCIR's cosine classifier z_c = sigma * cos(w_c, f), one learnable sigma (PROTOCOL 2).

    Rows of earlier rounds live in `weight_old` (requires_grad=False: no update, no weight
    decay, since the engine only optimises parameters that require grad); the rows added by
    the latest `grow` live in `weight_new` and train together with sigma.
    """

    def __init__(self, in_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.weight_old = nn.Parameter(torch.empty(0, in_dim), requires_grad=False)
        self.weight_new = nn.Parameter(torch.empty(0, in_dim))
        self.sigma = nn.Parameter(torch.ones(1))
        if num_classes:
            self.grow(num_classes)

    @property
    def num_classes(self) -> int:
        return self.weight_old.shape[0] + self.weight_new.shape[0]

    @property
    def weight(self) -> Tensor:
        return torch.cat([self.weight_old, self.weight_new])

    def grow(self, n_new: int, init: Tensor | None = None) -> None:
        """Freeze every existing row, append `n_new` trainable rows: `init` (imprinted
        weights, shape (n_new, in_dim)) or uniform(-1/sqrt(d), 1/sqrt(d)). sigma is kept."""
        device = self.weight_new.device
        if init is None:
            bound = self.in_dim ** -0.5
            init = torch.empty(n_new, self.in_dim, device=device).uniform_(-bound, bound)
        if init.shape != (n_new, self.in_dim):
            raise ValueError(f"init has shape {tuple(init.shape)}, "
                             f"expected ({n_new}, {self.in_dim})")
        self.weight_old = nn.Parameter(self.weight.detach().clone(), requires_grad=False)
        self.weight_new = nn.Parameter(init.detach().to(device, torch.float32).clone())

    def fresh(self, num_classes: int) -> CosineHead:
        """A new, independent head of the same kind with its own sigma = 1 (for the expert)."""
        return CosineHead(self.in_dim, num_classes).to(self.weight_new.device)

    def cosine(self, features: Tensor) -> Tensor:
        """cos(w_c, f) for every class, (B, C), in float32 even under autocast (trap 20)."""
        with torch.autocast(features.device.type, enabled=False):
            f = F.normalize(features.float(), dim=1)
            w = F.normalize(self.weight.float(), dim=1)
            return f @ w.T

    def forward(self, features: Tensor) -> Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return self.sigma.float() * self.cosine(features)


BackboneCall = Callable[[nn.Module, Tensor], Tensor]
_backbone_call: ContextVar[BackboneCall | None] = ContextVar("backbone_call", default=None)


@contextlib.contextmanager
def backbones_through(call: BackboneCall) -> Iterator[None]:
    """Inside, every `Net` runs its backbone as `call(backbone, x)`: the engine's one compiled
    function for all of a run's networks (student, teachers, expert)."""
    token = _backbone_call.set(call)
    try:
        yield
    finally:
        _backbone_call.reset(token)


class Net(nn.Module):
    """Backbone + growing head. forward -> (features, logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        call = _backbone_call.get()
        features = self.backbone(x) if call is None else call(self.backbone, x)
        return features, self.head(features)


def make_backbone(kind: str, *, width: float = 1.0, shortcut: str = "A",
                  last_relu: bool = True) -> nn.Module:
    if kind == "resnet32":
        return ResNet32(width=width, shortcut=shortcut, last_relu=last_relu)
    if kind == "resnet18":
        return ResNet18(last_relu=last_relu)
    raise ValueError(f"backbone={kind!r} is unknown; choose resnet32 or resnet18")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

