"""LwF, class-incremental with one shared head (Li & Hoiem, TPAMI 2017), as PROTOCOL 3.1.

Round r >= 2: L = CE(z[all N_r], y) + lambda_1 * KD_To(z[O_r], z_old), lambda_1 = 1, To = 2
(seed Eq. 4 without Ln). Inference: CNN. Round 1: plain CE.

With exemplars (`lwf_exemplars`, the default; FACIL's "LwF-E") the memory is replayed. Without
(classic LwF-MC) the classifier trains on new data only and CE covers the new-class logits
only (PyCIL; PROTOCOL trap 12); the memory is still built, for DD's expert and NME logging.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import cross_entropy, old_knowledge_loss
from .base import Method, Outputs, Round


class LwF(Method):
    name = "lwf"
    inference = "cnn"

    @property
    def replays_memory(self) -> bool:
        return self.cfg.lwf_exemplars

    def before_round(self, rnd: Round) -> None:
        if not self.replays_memory:
            rnd.train_indices = self.scenario.train_indices(rnd.new_classes)

    def objective(self, x: Tensor, y: Tensor, out: Outputs,
                  old: Outputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = out[1]
        if old is None:
            lc = cross_entropy(logits, y)
            return lc, {"Lc": lc.detach()}
        s = old[1].shape[1]
        # Without replay every target is a new class: CE over the new logits, targets - s_r.
        lc = cross_entropy(logits, y) if self.replays_memory else cross_entropy(logits[:, s:], y - s)
        lo = old_knowledge_loss(logits, old[1], self.cfg.temperature_old)
        return lc + self.cfg.lambda_old * lo, {"Lc": lc.detach(), "Lo": lo.detach()}
