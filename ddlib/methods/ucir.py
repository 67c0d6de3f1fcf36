"""UCIR / LUCIR (Hou et al., CVPR 2019) as PROTOCOL 3.3 specifies.

Model: ResNet-32 (ImageNet: ResNet-18) with option-B shortcuts and no ReLU after the last
block (features may be negative), cosine head z_c = sigma * cos(w_c, f) from round 1 on
(paper Eq. 1).
Round 1: CE on the sigma-scaled cosine logits. Round r >= 2:
  - new class rows are imprinted from the old network's normalised class means, scaled to
    the mean norm of the old rows; old rows are frozen, sigma is carried over and trains;
  - L = CE + lambda * L_LF + lambda_mr * L_MR, with the less-forget constraint L_LF (Eq. 3)
    on raw features, the adaptive weight lambda = lambda_base * sqrt(s_r / n_r) (Eq. 4, in
    the old/new orientation of the authors' code), and the margin ranking loss L_MR
    (Eq. 5) on sigma-free cosines of old-class anchors against the K hardest new classes.
Inference: CNN (sigma * cos over the seen classes); NME is logged by the base class.
Class-balanced fine-tuning (CBF) is not implemented: PROTOCOL keeps it off for CIFAR.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import engine
from ..losses import cross_entropy, less_forget_loss, margin_ranking_loss
from ..models import CosineHead
from .base import Method, Outputs, Round


def imprint_weights(class_features: list[Tensor], old_weight: Tensor) -> Tensor:
    """Imprinted rows, one per new class: w_c = mean_norm(old rows) * normalise(mean over
    c's images of normalise(f(x))). Normalising each feature first keeps images with large
    feature norms from dominating the class direction."""
    scale = old_weight.float().norm(dim=1).mean()
    rows = [F.normalize(F.normalize(f.float(), dim=1).mean(dim=0), dim=0) for f in class_features]
    return scale * torch.stack(rows)


def adaptive_lambda(lambda_base: float, num_old: int, num_new: int) -> float:
    """Eq. (4): the feature constraint grows with the old/new class ratio, so rounds that
    add few classes to many old ones preserve the old geometry more strongly."""
    return lambda_base * math.sqrt(num_old / num_new)


class UCIR(Method):
    name = "ucir"
    inference = "cnn"
    # UCIR-orig's CIFAR ResNet-32: 1x1-conv shortcuts, last block without its final ReLU, so
    # the cosine head and L_LF see signed features (trap 13: old and new model alike).
    backbone_options = {"shortcut": "B", "last_relu": False}

    def make_head(self, in_dim: int) -> nn.Module:
        return CosineHead(in_dim)

    def expand(self, rnd: Round) -> None:
        head: CosineHead = self.model.head
        if rnd.idx == 1 or head.num_classes == 0:
            head.grow(len(rnd.new_classes))  # uniform(-1/sqrt(d), 1/sqrt(d)) rows
            return
        # The model has not trained yet this round, so it *is* the old network; infer runs
        # it in eval mode with the test transform (trap 1), in float32.
        feats = [engine.infer(self.model, self.data,
                              self.data.train_images(self.scenario.train_indices([c])),
                              autocast=False)[0]
                 for c in rnd.new_classes]
        head.grow(len(rnd.new_classes), init=imprint_weights(feats, head.weight.detach()))

    def objective(self, x: Tensor, y: Tensor, out: Outputs,
                  old: Outputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        features, logits = out
        lc = cross_entropy(logits, y)
        if old is None:
            return lc, {"Lc": lc.detach()}
        cfg = self.cfg
        num_old = old[1].shape[1]                    # s_r: the old model's head width
        num_new = self.model.head.num_classes - num_old
        lam = adaptive_lambda(cfg.ucir_lambda_base, num_old, num_new)
        lf = less_forget_loss(features, old[0])      # raw features of both models
        # Recompute sigma-free cosines from the features rather than dividing logits by sigma.
        cosines = self.model.head.cosine(features)
        mr = margin_ranking_loss(cosines, y, num_old, cfg.ucir_margin, cfg.ucir_k)
        loss = lc + lam * lf + cfg.ucir_lambda_mr * mr
        return loss, {"Lc": lc.detach(), "Llf": lf.detach(), "Lmr": mr.detach(),
                      "sigma": self.model.head.sigma.detach().float().squeeze()}
