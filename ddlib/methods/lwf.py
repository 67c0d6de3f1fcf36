"""LwF, class-incremental with one shared head (Li & Hoiem, TPAMI 2017), as PROTOCOL 3.1.

Round r >= 2: L = CE(z[all N_r], y) + lambda_1 * KD_To(z[O_r], z_old), lambda_1 = 1, To = 2
(seed Eq. 4 without Ln). Inference: CNN.

With exemplars (`lwf_exemplars`, the default; FACIL's "LwF-E") the training set and the loss
are exactly iCaRL's `ce_kd` form, so LwF *is* `ICaRL` with CNN inference: such a run is
read from iCaRL's training (`trained_as`) rather than trained again. Only the no-exemplar
variant (classic LwF-MC) trains on its own: the memory is not replayed and CE covers the
new-class logits only (PyCIL; PROTOCOL trap 12).
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from ..config import RunConfig
from ..losses import cross_entropy, old_knowledge_loss
from .base import Outputs, Round
from .icarl import ICaRL


class LwF(ICaRL):
    name = "lwf"
    inference = "cnn"

    @classmethod
    def trained_as(cls, cfg: RunConfig) -> RunConfig | None:
        return dataclasses.replace(cfg, method="icarl") if cfg.lwf_exemplars else None

    def before_round(self, rnd: Round) -> None:
        if not self.cfg.lwf_exemplars:
            # LwF-MC trains on new data only. The memory is still built (DD's expert needs
            # stored old images, NME is logged), it is just never replayed to the classifier.
            rnd.train_indices = self.scenario.train_indices(rnd.new_classes)

    def objective(self, x: Tensor, y: Tensor, out: Outputs,
                  old: Outputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        if self.cfg.lwf_exemplars or old is None:  # round 1 is plain CE either way
            return super().objective(x, y, out, old)
        s = old[1].shape[1]
        # Every target is a new class here; CE over the new logits only, targets shifted by s_r.
        lc = cross_entropy(out[1][:, s:], y - s)
        lo = old_knowledge_loss(out[1], old[1], self.cfg.temperature_old)
        return lc + self.cfg.lambda_old * lo, {"Lc": lc.detach(), "Lo": lo.detach()}
