"""Validation of attack hyper-parameters and call arguments: one clear error before any work is done."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

# Inputs a hair outside [0, 1] (round-off from an inverse normalisation, a resize) are accepted and clamped.
RANGE_TOLERANCE = 1e-5


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0.0 or eps > 1.0:
        raise ValueError(
            f"eps must lie in [0, 1] (pixel scale of [0, 1] images), got {eps}; "
            "for the paper's 0-255 units use from_pixels(k) == k / 255"
        )
    return eps


def check_steps(steps: int, name: str = "steps") -> int:
    if isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {steps!r}")
    return int(steps)


def check_positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_input_image(x: Tensor) -> None:
    """`x` must be a float batch [N, ...] of finite values in [0, 1] (up to RANGE_TOLERANCE)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor batch [N, C, H, W], got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor with values in [0, 1], got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [N, C, H, W], got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf; attacks need finite [0, 1] images (check the data pipeline)")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ValueError(
            f"x must be RGB in [0, 1] (normalisation belongs inside the model), "
            f"got values in [{lo:.4g}, {hi:.4g}]"
        )


def check_tasks(
    needed: Sequence[str],
    x: Tensor,
    targets: Mapping[str, Tensor],
    losses: Mapping[str, object],
    model_tasks: Sequence[str] | None,
) -> None:
    """Every task the direction needs has a loss, a target with x's batch size, and a model head."""
    if not isinstance(targets, Mapping):
        raise TypeError(f"targets must be a mapping task -> Tensor, got {type(targets).__name__}")
    for task in needed:
        if task not in losses:
            raise ValueError(f"no loss given for task {task!r}; losses has {sorted(losses)}")
        if task not in targets:
            raise ValueError(
                f"targets has no entry for task {task!r}, which the attack direction needs; "
                f"targets has {sorted(targets)}"
            )
        target = targets[task]
        if not isinstance(target, Tensor) or target.dim() == 0 or target.shape[0] != x.shape[0]:
            shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(
                f"targets[{task!r}] must be a tensor with the batch size of x ({x.shape[0]}), got {shape}"
            )
        if model_tasks is not None and task not in model_tasks:
            raise ValueError(f"the model has no task {task!r}; its tasks are {tuple(model_tasks)}")
