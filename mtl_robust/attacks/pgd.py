"""PGD (the paper code's "IFGSM"; docs/method.md): signed steps of alpha, projected after each step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mtl_robust.attacks.base import Attack, Recorder, project, uniform_start
from mtl_robust.attacks.checks import check_positive, check_steps
from mtl_robust.attacks.directions import Direction
from mtl_robust.attacks.objective import LossFn, MultiTaskObjective


class PGD(Attack):
    """x <- clip_pix(clip_ball(x + alpha * sign(d(x)))), `steps` times; returns the last iterate.

    Defaults follow the paper code: alpha = eps / steps and no random start (so the ball never binds).
    `random_start=True` starts uniformly in the ball (torchattacks' PGD).
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
    ) -> None:
        super().__init__(
            eps, direction=direction, attack_losses=attack_losses, seed=seed, eot_samples=eot_samples
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
        return uniform_start(x0, self.eps, self._generator(x0.device))

    def _direction_step(self, grad: Tensor, state: dict[str, Any]) -> Tensor:
        """The sign direction of one step (MIM overrides this to add momentum)."""
        return self.direction.step(grad)

    def _perturb(self, objective: MultiTaskObjective, x0: Tensor, recorder: Recorder) -> Tensor:
        x = self._start(x0)
        state: dict[str, Any] = {}
        for k in range(self.steps):
            ev = objective(x, k)
            recorder.add(k, ev, self.alpha)
            x = project(x + self.alpha * self._direction_step(ev.grad, state), x0, self.eps)
        self._record_final(objective, x, recorder)
        return x
