"""BiC, bias correction (Wu et al., "Large Scale Incremental Learning", CVPR 2019), PROTOCOL 3.4.

Round r >= 2:
1. hold out n_val = max(1, floor(0.1 K / s_r)) images of every seen class (old: from its
   exemplars, new: from its training images) as a balanced validation set;
2. stage 1: L = (1 - lam) CE(z, y) + lam KD_2(z[O_r], z_old), lam = s_r / N_r, where z are the
   logits after the earlier rounds' (frozen) bias layers, and so are the teacher's;
3. stage 2: append a bias layer o[s_r:N_r] <- alpha o + beta and fit only (alpha, beta) on the
   validation set: CE over all N_r corrected logits + 0.1 beta^2 / 2; then freeze it forever.
Inference: CNN after all bias layers (the head applies them). DD adds Ln with weight 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import engine
from ..config import RunConfig
from ..engine import DeviceData
from ..losses import cross_entropy, old_knowledge_loss
from ..models import LinearHead
from ..scenario import Scenario
from .base import Method, Outputs, Round

BETA_L2 = 0.1  # weight of beta^2 / 2 in stage 2 (original code, per FACIL's notes)


class BiasLayer(nn.Module):
    """BiC's correction of one round's logits: o[start:end] <- alpha * o + beta."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__()
        self.start, self.end = start, end
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, logits: Tensor) -> Tensor:
        scaled = logits[:, self.start:self.end] * self.alpha + self.beta
        return torch.cat([logits[:, :self.start], scaled, logits[:, self.end:]], dim=1)


class BiasCorrectedHead(LinearHead):
    """BiC's classifier: a linear head whose logits pass through every earlier round's frozen
    bias layer. Its `fresh` copy (for DD's expert) is a plain linear head."""

    def __init__(self, in_dim: int, num_classes: int = 0) -> None:
        super().__init__(in_dim, num_classes)
        self.bias_layers = nn.ModuleList()

    def forward(self, features: Tensor) -> Tensor:
        logits = super().forward(features)
        for layer in self.bias_layers:
            logits = layer(logits)
        return logits


class BiC(Method):
    name = "bic"
    inference = "cnn"

    def __init__(self, cfg: RunConfig, scenario: Scenario, data: DeviceData) -> None:
        counts = np.bincount(scenario.data.train_y)
        self.check(cfg, scenario.data.num_classes, scenario.rounds,
                   min_train_per_class=int(counts.min()))  # fail before any training
        super().__init__(cfg, scenario, data)

    @staticmethod
    def n_val(cfg: RunConfig, num_old: int) -> int:
        """Validation images per class at a round with `num_old` old classes."""
        # 1e-9 keeps e.g. 0.1 * 2000 / 20 from flooring to 9 through float rounding
        return max(1, math.floor(cfg.bic_val_fraction * cfg.memory / num_old + 1e-9))

    @classmethod
    def check(cls, cfg: RunConfig, num_classes: int, rounds: list[int], *,
              min_train_per_class: int | None = None) -> None:
        """Raise ValueError if some round cannot hold out its validation split.

        During round r every old class holds floor(K / s_r) exemplars (PROTOCOL 1.4); it must
        give n_val of them to validation and keep at least one for stage 1. s_r grows, so the
        last round binds: with the 0.1 fraction this means K >= 2 * s_R.
        """
        for r in range(2, len(rounds) + 1):
            s = sum(rounds[:r - 1])
            n = cls.n_val(cfg, s)
            if min_train_per_class is not None and min_train_per_class < n + 1:
                raise ValueError(
                    f"memory={cfg.memory} asks for {n} validation images per class at round {r}, "
                    f"but the smallest class has only {min_train_per_class} training images")
            if cfg.memory // s < n + 1:
                raise ValueError(
                    f"memory={cfg.memory} is too small for BiC: at round {r} each of the {s} old "
                    f"classes (of {num_classes}) holds {cfg.memory // s} exemplar(s), but {n} go "
                    f"to the validation split and at least 1 must stay for training")

    def make_head(self, in_dim: int) -> nn.Module:
        return BiasCorrectedHead(in_dim)

    def before_round(self, rnd: Round) -> None:
        if not rnd.old_classes:
            return
        n = self.n_val(self.cfg, len(rnd.old_classes))
        rng = np.random.default_rng([self.cfg.seed, rnd.idx])  # own stream: deterministic
        pools = [self.memory.ranked[o] for o in rnd.old_classes]
        pools += [self.scenario.train_indices([c]) for c in rnd.new_classes]
        rnd.reserved = np.concatenate([rng.choice(pool, n, replace=False) for pool in pools])
        # Validation images must not train theta_r (nor the expert: the lifecycle drops them).
        rnd.train_indices = rnd.unreserved(rnd.train_indices)

    def objective(self, x: Tensor, y: Tensor, out: Outputs,
                  old: Outputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        lc = cross_entropy(out[1], y)
        if old is None:
            return lc, {"Lc": lc.detach()}
        lam = old[1].shape[1] / out[1].shape[1]  # s_r / N_r: more old classes, more distillation
        lo = old_knowledge_loss(out[1], old[1], self.cfg.temperature_old)
        return (1 - lam) * lc + lam * lo, {"Lc": lc.detach(), "Lo": lo.detach()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        # Earlier rounds' (alpha, beta) stay fixed in stage 1 (and get no weight decay).
        return [p for name, p in self.model.named_parameters()
                if not name.startswith("head.bias_layers.")]

    def extra_stage(self, rnd: Round) -> dict | None:
        """Stage 2; returns (alpha, beta) and validation accuracies for the round record."""
        if not rnd.old_classes:
            return None
        cfg = self.cfg
        val = torch.as_tensor(rnd.reserved, device=self.device)
        y = self.data.train_y[val]
        # The network is frozen in eval mode (BN statistics untouched, PROTOCOL trap 2) and the
        # validation images get the test transform, so their logits (after the earlier bias
        # layers) are fixed: compute them once and fit (alpha, beta) on the cached logits.
        _, logits = engine.infer(self.model, self.data, self.data.train_images(val))
        layer = BiasLayer(len(rnd.old_classes), rnd.num_seen).to(self.device)
        opt = torch.optim.SGD(layer.parameters(), lr=cfg.bic_lr, momentum=cfg.momentum)

        def objective(idx: Tensor | slice) -> Tensor:
            return (F.cross_entropy(layer(logits[idx]), y[idx])
                    + BETA_L2 * layer.beta.pow(2).sum() / 2)

        # On a few dozen images, SGD at lr 0.1 with momentum can end an epoch far from the
        # optimum (seen: alpha 1.49, validation accuracy 36% -> 17%); keep the epoch-end
        # (alpha, beta) of lowest validation objective, the identity start included.
        def snapshot() -> dict[str, Tensor]:
            return {k: v.clone() for k, v in layer.state_dict().items()}

        with torch.no_grad():
            best = (float(objective(slice(None))), snapshot())
        for _ in range(cfg.bic_epochs):
            order = torch.randperm(len(y), generator=self.generator,
                                   device=self.generator.device).to(self.device)
            for start in range(0, len(y), cfg.batch_size):
                loss = objective(order[start:start + cfg.batch_size])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                value = float(objective(slice(None)))
            if value < best[0]:
                best = (value, snapshot())
        layer.load_state_dict(best[1])
        layer.requires_grad_(False)  # frozen forever: later rounds and the old-model copies
        self.model.head.bias_layers.append(layer)

        def acc(z: Tensor) -> float:
            return round(float((z.argmax(1) == y).float().mean()) * 100, 2)

        return {
            "bic_alpha": float(layer.alpha), "bic_beta": float(layer.beta),
            "bic_val_size": len(y),
            "bic_val_acc_before": acc(logits), "bic_val_acc_after": acc(layer(logits)),
        }

    def state(self) -> dict:
        return {**super().state(),
                "bias_ranges": [[b.start, b.end] for b in self.model.head.bias_layers]}

    def load_state(self, state: dict) -> None:
        self.model.head.bias_layers = nn.ModuleList(
            BiasLayer(a, b) for a, b in state["bias_ranges"]).to(self.device)
        # Checkpoints written before the head owned its bias layers name them at top level.
        state = {**state, "model": {("head." + k if k.startswith("bias_layers.") else k): v
                                    for k, v in state["model"].items()}}
        super().load_state(state)
        self.model.head.bias_layers.requires_grad_(False)  # bias layers freeze once trained
