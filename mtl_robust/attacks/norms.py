"""The geometry of each threat model (`mtl_robust.values.norm.Norm`): projections onto the ball intersected
with the pixel range, the steepest-ascent step, random starts.

Projections (ball, then pixel range, as the reference codes do):
* L-inf: clamp to [x0 - eps, x0 + eps], then to [0, 1] (exact onto the intersection: both are boxes).
* L2: scale delta onto the ball, then clamp to [0, 1] (auto-attack's APGD-L2, torchattacks' PGDL2).
  Clamping moves every coordinate towards x0 (x0 lies in [0, 1]), so the ball still holds; the result is
  feasible, though not always the Euclidean-nearest point of the intersection.
* L1: the exact Euclidean projection onto {||delta||_1 <= eps} intersected with the box {0 <= x0 + delta
  <= 1} (Croce & Hein, "Mind the box", ICML 2021): delta_i = sign(v_i) clamp(|v_i| - lam, 0, room_i), with
  room_i what the pixel range leaves in v_i's direction and lam >= 0 the smallest threshold that meets the
  budget, found exactly from the sorted breakpoints of the piecewise-linear budget curve. Clamping first
  and projecting onto the ball after would leave budget on pixels that cannot move.

Steepest ascent, max g . delta over the unit ball:
* L-inf: sign(g); L2: g / ||g||_2 (both exact over the ball).
* L1: over the bare L1 ball the maximiser is one coordinate (the largest |g_i|), which the pixel range
  clips at once. The step used is the exact maximiser over the L1 ball intersected with the L-inf ball of
  radius 1/k: sign(g_i) / k on the k coordinates of largest |g_i| (k = ceil(share * D), `Norm.step_share`,
  20 % by default as auto-attack's APGD-L1 starts; APGD-L1 adapts k itself).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtl_robust.values.norm import Norm

# Floor under a per-sample norm before dividing by it (a zero gradient gives a zero step).
TINY = 1e-12


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def norms_of(delta: Tensor, norm: Norm) -> Tensor:
    """[N] the norm of each sample's perturbation."""
    flat = delta.flatten(1)
    if norm.name == "linf":
        return flat.abs().amax(dim=1)
    if norm.name == "l2":
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)


def step_count(norm: Norm, dim: int) -> int:
    """How many coordinates one L1 step moves (all, for the other norms)."""
    if norm.name != "l1":
        return dim
    return max(1, min(dim, math.ceil(norm.step_share * dim)))


def sparse_step(grad: Tensor, k: Tensor | int) -> Tensor:
    """sign(g_i) / count on the coordinates whose |g_i| reaches the k-th largest (k an int or an [N] tensor,
    one per sample; ties at the threshold share the unit budget): unit L1 norm, the L1 step (APGD-L1 adapts
    k per sample). The threshold is a k-th order statistic (`kthvalue`, linear time), not a sort."""
    flat = grad.flatten(1)
    size = flat.abs()
    n, dim = flat.shape
    ks = torch.as_tensor(k).reshape(-1).expand(n).long().clamp(1, dim).tolist()
    if len(set(ks)) == 1:
        threshold = size.kthvalue(dim - ks[0] + 1, dim=1, keepdim=True).values
    else:
        threshold = torch.stack([size[i].kthvalue(dim - ks[i] + 1).values for i in range(n)])[:, None]
    mask = size >= threshold
    count = mask.sum(dim=1, keepdim=True).clamp_min(1)
    return (torch.where(mask, flat.sign(), torch.zeros_like(flat)) / count).view_as(grad)


def steepest(grad: Tensor, norm: Norm) -> Tensor:
    """The unit-ball step that maximises grad . delta (module docstring), per sample."""
    if norm.name == "linf":
        return grad.sign()
    if norm.name == "l2":
        size = grad.flatten(1).norm(p=2, dim=1)
        return grad / _per_sample(size.clamp_min(TINY), grad)
    dim = grad[0].numel()
    return sparse_step(grad, step_count(norm, dim))


def project(x: Tensor, x0: Tensor, eps: float | Tensor, norm: Norm) -> Tensor:
    """x moved into the eps-ball of `norm` around x0 intersected with [0, 1] (module docstring)."""
    if norm.name == "linf":
        return torch.clamp(torch.minimum(torch.maximum(x, x0 - eps), x0 + eps), 0.0, 1.0)
    if norm.name == "l2":
        delta = x - x0
        size = delta.flatten(1).norm(p=2, dim=1)
        eps_t = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
        scale = torch.where(size > eps_t, eps_t / size.clamp_min(TINY), torch.ones_like(size))
        return torch.clamp(x0 + delta * _per_sample(scale, delta), 0.0, 1.0)
    return x0 + project_l1_box(x - x0, x0, eps)


def project_l1_box(v: Tensor, x0: Tensor, eps: float | Tensor) -> Tensor:
    """The exact Euclidean projection of the perturbation v onto ||delta||_1 <= eps, 0 <= x0 + delta <= 1."""
    shape = v.shape
    flat = v.flatten(1)
    x = x0.flatten(1)
    n = flat.shape[0]
    room = torch.where(flat > 0, 1.0 - x, x).clamp_min(0.0)
    size = flat.abs()
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).expand(n)
    boxed = torch.minimum(size, room)
    over = boxed.sum(dim=1) > eps_t
    if not bool(over.any()):
        return (flat.sign() * boxed).view(shape)
    # budget(lam) = sum_i clamp(|v_i| - lam, 0, room_i): piecewise linear and decreasing, with breakpoints
    # where a coordinate leaves zero (lam = |v_i|) or saturates (lam = |v_i| - room_i). Walking the sorted
    # breakpoints from the top, the slope is minus the number of coordinates in between.
    points = torch.cat([size, size - room], dim=1)
    entering = torch.cat([torch.ones_like(size), -torch.ones_like(size)], dim=1)
    points, order = points.sort(dim=1, descending=True)
    entering = entering.gather(1, order)
    active = entering.cumsum(dim=1)  # coordinates strictly between point j and point j + 1
    gaps = points[:, :-1] - points[:, 1:]
    budget_at = torch.cat([torch.zeros_like(points[:, :1]), (active[:, :-1] * gaps).cumsum(dim=1)], dim=1)
    # The first breakpoint at which the budget curve reaches eps; lam lies between it and the one before.
    reached = budget_at >= eps_t[:, None]
    j = reached.float().argmax(dim=1).clamp_min(1)
    rows = torch.arange(n, device=flat.device)
    slope = active[rows, j - 1].clamp_min(1)
    lam = points[rows, j - 1] - (eps_t - budget_at[rows, j - 1]) / slope
    lam = torch.where(over, lam.clamp_min(0.0), torch.zeros_like(lam))
    delta = torch.minimum((size - lam[:, None]).clamp_min(0.0), room)
    # Round-off guard: the budget holds exactly after a scale towards x0 (which keeps the box).
    total = delta.sum(dim=1)
    delta = delta * torch.where(total > eps_t, eps_t / total.clamp_min(TINY), torch.ones_like(total))[:, None]
    return (flat.sign() * delta).view(shape)


def random_start(x0: Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> Tensor:
    """A random point of the ball intersected with [0, 1]: uniform per coordinate for L-inf; for L2 a
    Gaussian direction at a uniform radius (torchattacks' PGDL2); for L1 a Gaussian projected onto the ball
    and box (auto-attack's APGD-L1 start)."""
    if norm.name == "linf":
        noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return project(x0 + (2.0 * noise - 1.0) * eps, x0, eps, norm)
    gauss = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if norm.name == "l2":
        radius = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype) * eps
        unit = gauss / _per_sample(gauss.flatten(1).norm(p=2, dim=1).clamp_min(TINY), gauss)
        return project(x0 + unit * _per_sample(radius, unit), x0, eps, norm)
    return project(x0 + gauss, x0, eps, norm)


def boundary_start(x0: Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> Tensor:
    """APGD's start: a random point on the sphere of the ball (then the pixel range), as auto-attack."""
    if norm.name == "linf":
        t = 2.0 * torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) - 1.0
    else:
        t = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if norm.name == "l1":
        return project(x0 + t, x0, eps, norm)
    scale = norms_of(t, norm).clamp_min(TINY)
    return project(x0 + eps * t / _per_sample(scale, t), x0, eps, norm)
