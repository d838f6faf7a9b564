"""MIM (torchattacks' MIFGSM; docs/method.md): PGD on the sign of an accumulated, normalised gradient."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mtl_robust.attacks.base import per_sample
from mtl_robust.attacks.directions import Direction
from mtl_robust.attacks.norms import norms_of
from mtl_robust.attacks.objective import LossFn
from mtl_robust.attacks.pgd import PGD
from mtl_robust.values.norm import Norm


class MIM(PGD):
    """m <- decay * m + g / mean|g| (per sample); x <- clip_pix(clip_ball(x + alpha * step(m / max|m|))),
    `step` the direction's own (the sign for all but MINMAX).

    Defaults: decay 1.0, alpha = eps / steps, no random start. A sample whose gradient is zero adds nothing
    to its momentum (no division by zero).
    """

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        decay: float = 1.0,
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
            alpha,
            steps,
            random_start,
            direction=direction,
            attack_losses=attack_losses,
            seed=seed,
            eot_samples=eot_samples,
            norm=norm,
        )
        if not (math.isfinite(decay) and decay >= 0):
            raise ValueError(f"decay must be a finite number >= 0, got {decay}")
        self.decay = float(decay)

    def hparams(self) -> dict[str, Any]:
        out = super().hparams()
        return {**dict(list(out.items())[:3]), "decay": self.decay, **dict(list(out.items())[3:])}

    def _direction_step(self, grad: Tensor, state: dict[str, Any]) -> Tensor:
        scale = grad.abs().flatten(1).mean(dim=1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        normalised = torch.where(
            per_sample(scale > 0, grad), grad / per_sample(safe, grad), torch.zeros_like(grad)
        )
        momentum = state.get("momentum")
        momentum = normalised if momentum is None else self.decay * momentum + normalised
        state["momentum"] = momentum
        # The direction's own step of the momentum, scaled into the unit ball of the norm first: a
        # steepest-ascent step is unchanged, and MINMAX's first step is its exact step (under L-inf with
        # its fractional tie coordinates kept).
        peak = norms_of(momentum, self.norm)
        unit = momentum / per_sample(torch.where(peak > 0, peak, torch.ones_like(peak)), momentum)
        return self.step(unit)
