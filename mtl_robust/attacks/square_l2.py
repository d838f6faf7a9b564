"""Square-L2 (Andriushchenko et al., ECCV 2020; auto-attack's `square.py`, norm L2): the proposals of the
L2 Square attack, for `Square(norm="l2")`.

The start tiles the image with windows of side H // 5, each holding the "eta" pattern (two opposite halves
of nested rectangles weighted 1 / (ring + 1)^2, unit L2 norm) times a random sign per image and channel,
scaled to the sphere of radius eps. Each query picks two windows of side s (s from the same p schedule as
L-inf, odd, at least 3; the same positions for the whole batch, as the reference draws them): the second
window's perturbation is removed, and the first gets a fresh eta pattern plus its old content, rescaled per
image and channel so that the removed mass and whatever budget is left go into it; the whole perturbation
is then scaled onto the sphere and clamped to [0, 1]. A proposal is accepted per image where it raises the
direction's objective.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TILES = 5  # the start's windows per image side
MIN_SIDE = 3


def eta_rectangles(height: int, width: int, device: torch.device) -> Tensor:
    """Nested rectangles around the centre, ring r weighted 1 / (r + 1)^2, scaled to unit L2 norm."""
    delta = torch.zeros(height, width, device=device)
    top, left = height // 2, width // 2
    for ring in range(max(top + 1, left + 1)):
        delta[
            max(top, 0) : min(top + 2 * ring + 1, height), max(left, 0) : min(left + 2 * ring + 1, width)
        ] += 1.0 / (ring + 1) ** 2
        top, left = top - 1, left - 1
    return delta / delta.norm().clamp_min(1e-12)


def eta(side: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """[side, side]: the upper half eta_rectangles, the lower half its negative, unit L2 norm, transposed at
    random."""
    delta = torch.zeros(side, side, device=device)
    delta[: side // 2] = eta_rectangles(side // 2, side, device)
    delta[side // 2 :] = -eta_rectangles(side - side // 2, side, device)
    delta = delta / delta.norm().clamp_min(1e-12)
    if bool(torch.rand(1, generator=generator, device=device) > 0.5):
        delta = delta.t()
    return delta


def unit_l2(delta: Tensor) -> Tensor:
    return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def start(x0: Tensor, eps: float, signs, generator: torch.Generator | None) -> Tensor:
    """The tiled start on the sphere of radius eps, clamped to [0, 1]."""
    n, channels, height, width = x0.shape
    side = max(height // TILES, 1)
    offset = (height - side * TILES) // 2
    delta = torch.zeros_like(x0)
    top = offset
    for _ in range(height // side):
        left = offset
        for _ in range(width // side):
            pattern = eta(side, x0.device, generator).to(x0.dtype)
            delta[:, :, top : top + side, left : left + side] += pattern * signs((n, channels, 1, 1))
            left += side
        top += side
    return (x0 + unit_l2(delta) * eps).clamp(0.0, 1.0)


def proposal(
    x0: Tensor, x_best: Tensor, eps: float, p: float, signs, generator: torch.Generator | None
) -> Tensor:
    """One Square-L2 proposal from the current best point (module docstring)."""
    n, channels, height, width = x0.shape
    side = max(int(round(math.sqrt(p * height * width))), MIN_SIDE)
    side = min(side + (side % 2 == 0), min(height, width))

    def corner() -> tuple[int, int]:
        top = int(torch.randint(0, height - side + 1, (1,), generator=generator, device=x0.device))
        left = int(torch.randint(0, width - side + 1, (1,), generator=generator, device=x0.device))
        return top, left

    (t1, l1), (t2, l2) = corner(), corner()
    w1 = (slice(None), slice(None), slice(t1, t1 + side), slice(l1, l1 + side))
    w2 = (slice(None), slice(None), slice(t2, t2 + side), slice(l2, l2 + side))
    delta = x_best - x0
    mask = torch.zeros_like(x0)
    mask[w1] = 1.0
    mask[w2] = 1.0
    norm_w1 = delta[w1].pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
    norm_windows = (delta * mask).pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
    norm_image = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    fresh = eta(side, x0.device, generator).to(x0.dtype) * signs((n, channels, 1, 1))
    fresh = fresh + delta[w1] / (norm_w1 + 1e-12)
    budget = ((eps**2 - norm_image**2).clamp_min(0.0) / channels + norm_windows**2).sqrt()
    fresh = fresh / (fresh.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt() + 1e-12) * budget
    delta = delta.clone()
    delta[w2] = 0.0
    delta[w1] = fresh
    return (x0 + unit_l2(delta) * eps).clamp(0.0, 1.0)
