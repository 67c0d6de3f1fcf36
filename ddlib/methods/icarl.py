"""iCaRL (Rebuffi et al., CVPR 2017) as PROTOCOL 3.2 specifies, default `ce_kd` form.

iCaRL is LwF's distillation with a replayed exemplar memory and a different inference rule:
loss at round r >= 2 = CE over all seen classes + lambda_1 * KD_To on the old classes' logits
(seed Eq. 4 without Ln); inference by the nearest mean of exemplars. Its training is therefore
LwF-with-exemplars' step for step; the results store shares such runs (`results.trained_by`).
"""

from __future__ import annotations

from .lwf import LwF


class ICaRL(LwF):
    name = "icarl"
    inference = "nme"

    @property
    def replays_memory(self) -> bool:
        return True
