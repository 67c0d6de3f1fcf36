"""iCaRL (Rebuffi et al., CVPR 2017) as PROTOCOL 3.2 specifies, default `ce_kd` form.

Loss at round r >= 2: CE over all seen classes + lambda_1 * KD_To on the old classes' logits
(seed Eq. 4 without Ln). Inference: nearest mean of exemplars.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import cross_entropy, old_knowledge_loss
from .base import Method, Outputs


class ICaRL(Method):
    name = "icarl"
    inference = "nme"

    def objective(self, x: Tensor, y: Tensor, out: Outputs,
                  old: Outputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        lc = cross_entropy(out[1], y)
        if old is None:
            return lc, {"Lc": lc.detach()}
        lo = old_knowledge_loss(out[1], old[1], self.cfg.temperature_old)
        return lc + self.cfg.lambda_old * lo, {"Lc": lc.detach(), "Lo": lo.detach()}
