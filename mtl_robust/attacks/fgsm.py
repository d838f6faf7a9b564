"""FGSM (docs/method.md): one steepest-ascent step of size eps from the clean input, no random start (its
L2/L1 form is FGM: the step normalised in that norm)."""

from __future__ import annotations

from torch import Tensor

from mtl_robust.attacks.base import Attack, Recorder
from mtl_robust.attacks.objective import MultiTaskObjective


class FGSM(Attack):
    """x_adv = proj(x0 + eps * step(d(x0))): step = sign under L-inf, the norm's steepest ascent else."""

    def _perturb(self, objective: MultiTaskObjective, x0: Tensor, recorder: Recorder) -> Tensor:
        ev = objective(x0, 0)
        recorder.add(0, ev, self.eps)
        x_adv = self.project(x0 + self.eps * self.step(ev.grad), x0)
        self._record_final(objective, x_adv, recorder)
        return x_adv
