"""WEIGHTED: the TOTAL direction on the task losses weighted as the model was trained, sum_t w_t L_t.

The attack that knows the training weights (Ghamizi et al.'s WGD idea): a model trained with static
weights w (`train.loss_weights`, `mtl=static`), a learned or dynamic weighting (UW, DWA: their final
weights, kept in the checkpoint) or a gradient aggregator (its weights on the block every task shares,
averaged over training) is attacked on the objective it was trained on. The weights are the model's, so
the text form is just `weighted`; the attack job reads them from the evaluated model
(`mtl_robust.mtl.attack_weights`) and binds them with `bound`; its rows carry them (`direction_weights`).
Like TOTAL it is the gradient of one objective, so it steps under every norm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mtl_robust.attacks.directions import Direction, Losses, Valid, _masked, register_direction

WEIGHTED = "weighted"


@register_direction()
class Weighted(Direction):
    """grad sum_t w_t L_t with the model's training weights w (bound by the attack job)."""

    name = WEIGHTED
    # Built from its text form it has no weights: the attack job binds the evaluated model's (`bound`).
    needs_model_weights = True

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = None if weights is None else {str(t): float(w) for t, w in weights.items()}
        if self.weights is not None and not self.weights:
            raise ValueError("direction weighted: no task weights given")

    def bound(self, weights: Mapping[str, float]) -> Weighted:
        """This direction with the model's weights."""
        return Weighted(weights)

    def objective(self, losses: Losses, valid: Valid, state: Any) -> Tensor:
        if self.weights is None:
            raise RuntimeError(
                "direction weighted attacks sum_t w_t L_t with the evaluated model's training weights; "
                "they are read from its checkpoint by the attack job (python -m mtl_robust.attack), or "
                "give them: Weighted({'seg': 1.0, ...})"
            )
        missing = set(losses) - set(self.weights)
        if missing:
            raise ValueError(
                f"direction weighted has no weight for tasks {sorted(missing)}; its weights are "
                f"{self.weights}"
            )
        return sum(self.weights[t] * _masked(losses[t], valid[t]) for t in losses)

    def __repr__(self) -> str:
        return f"Weighted({self.weights})"
