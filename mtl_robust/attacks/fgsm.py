"""FGSM (docs/method.md): one signed step of size eps from the clean input, no random start."""

from __future__ import annotations

from torch import Tensor

from mtl_robust.attacks.base import Attack, Recorder, project
from mtl_robust.attacks.objective import MultiTaskObjective


class FGSM(Attack):
    """x_adv = clip_pix(x0 + eps * sign(d(x0)))."""

    def _perturb(self, objective: MultiTaskObjective, x0: Tensor, recorder: Recorder) -> Tensor:
        ev = objective(x0, 0)
        recorder.add(0, ev, self.eps)
        x_adv = project(x0 + self.eps * self.direction.step(ev.grad), x0, self.eps)
        self._record_final(objective, x_adv, recorder)
        return x_adv
