"""PGD (the paper code's "IFGSM"; docs/method.md): steepest-ascent steps of alpha (signed under L-inf,
normalised under L2, sparse under L1), projected after each step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mtl_robust.attacks.base import Attack, Recorder
from mtl_robust.attacks.checks import check_positive, check_steps
from mtl_robust.attacks.directions import Direction
from mtl_robust.attacks.norms import random_start
from mtl_robust.attacks.objective import LossFn, MultiTaskObjective
from mtl_robust.values.norm import Norm


class PGD(Attack):
    """x <- clip_pix(clip_ball(x + alpha * step(d(x)))), `steps` times; returns the last iterate. `step` is
    the direction's steepest ascent under the attack's norm (sign(d) under L-inf: the paper's IFGSM; d /
    ||d||_2 under L2: torchattacks' PGDL2).

    Defaults follow the paper code: alpha = eps / steps and no random start (so the ball never binds).
    `random_start=True` starts at a random point of the ball (torchattacks' PGD and PGDL2).
    """

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = False,
        *,
        direction: str | Direction = "total",
        attack_losses: Mapping[str, LossFn | str] | None = None,
        seed: int | None = None,
        eot_samples: int = 1,
        norm: str | Norm = "linf",
    ) -> None:
        super().__init__(
            eps,
            direction=direction,
            attack_losses=attack_losses,
            seed=seed,
            eot_samples=eot_samples,
            norm=norm,
        )
        self.steps = check_steps(steps)
        self.alpha = self.eps / self.steps if alpha is None else check_positive(alpha, "alpha")
        self.random_start = bool(random_start)

    @property
    def total_steps(self) -> int:
        return self.steps

    @property
    def first_step_size(self) -> float:
        return self.alpha

    def hparams(self) -> dict[str, Any]:
        out = {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "random_start": self.random_start}
        return {**out, **{k: v for k, v in super().hparams().items() if k != "eps"}}

    def _start(self, x0: Tensor) -> Tensor:
        if not self.random_start:
            return x0
        return random_start(x0, self.eps, self.norm, self._generator(x0.device))

    def _direction_step(self, grad: Tensor, state: dict[str, Any]) -> Tensor:
        """The unit-ball step of one step (MIM overrides this to add momentum)."""
        return self.step(grad)

    def _perturb(self, objective: MultiTaskObjective, x0: Tensor, recorder: Recorder) -> Tensor:
        x = self._start(x0)
        state: dict[str, Any] = {}
        for k in range(self.steps):
            ev = objective(x, k)
            recorder.add(k, ev, self.alpha)
            x = self.project(x + self.alpha * self._direction_step(ev.grad, state), x0)
        self._record_final(objective, x, recorder)
        return x
