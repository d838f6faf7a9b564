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
  budget, found exactly on the piecewise-linear budget curve: secant rounds narrow it to a bracket holding a
  few of its breakpoints, which are then sorted and walked (`_l1_box_threshold`). Clamping first and
  projecting onto the ball after would leave budget on pixels that cannot move.

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
    k per sample). The threshold is a k-th order statistic (`kth_largest`, linear time), not a sort."""
    flat = grad.flatten(1)
    size = flat.abs()
    n, dim = flat.shape
    ks = torch.as_tensor(k).reshape(-1).expand(n).long().clamp(1, dim).tolist()
    if len(set(ks)) == 1:
        threshold = kth_largest(size, ks[0])
    else:
        threshold = torch.cat([kth_largest(size[i : i + 1], ks[i]) for i in range(n)])
    mask = size >= threshold
    count = mask.sum(dim=1, keepdim=True).clamp_min(1)
    return (torch.where(mask, flat.sign(), torch.zeros_like(flat)) / count).view_as(grad)


def kth_largest(values: Tensor, k: int) -> Tensor:
    """[N, 1] the k-th largest entry of each row: the smallest of an unsorted `topk`, which selects in linear
    time and is several times faster than `kthvalue` (the same order statistic) on CPU."""
    return values.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)


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
    lam = torch.zeros(n, dtype=flat.dtype, device=flat.device)
    rows = over.nonzero()[:, 0]
    lam[rows] = _l1_box_threshold(size[rows], room[rows], eps_t[rows]).clamp_min(0.0)
    delta = torch.minimum((size - lam[:, None]).clamp_min(0.0), room)
    # Round-off guard: the budget holds exactly after a scale towards x0 (which keeps the box).
    total = delta.sum(dim=1)
    delta = delta * torch.where(total > eps_t, eps_t / total.clamp_min(TINY), torch.ones_like(total))[:, None]
    return (flat.sign() * delta).view(shape)


# Secant rounds on the threshold between two counts of the breakpoints left in the bracket, the most rounds
# (past the resolution of float64 and float32: what is left inside are ties), and the most breakpoints the
# exact finish sorts.
SECANT_ROUNDS = 3
MAX_ROUNDS = 96
FINISH_POINTS = 2048


def _l1_box_threshold(size: Tensor, room: Tensor, eps: Tensor) -> Tensor:
    """[N] the lam with budget(lam) = sum_i clamp(size_i - lam, 0, room_i) = eps, for rows whose budget at 0
    exceeds eps. budget is piecewise linear and decreasing, with breakpoints where a coordinate leaves zero
    (lam = size_i) or saturates (lam = size_i - room_i). Secant rounds (Illinois) on [0, max size] bracket
    lam between two values with at most FINISH_POINTS breakpoints between them (O(D) per round, no sort of
    the 2D breakpoints: several times faster than sorting them, more so as D grows); the exact finish walks
    those few breakpoints, sorted, from the top of the bracket, where the budget and its slope (minus the
    coordinates strictly between their two breakpoints) are known."""
    low = size - room
    lo = torch.zeros_like(eps)
    hi = size.amax(dim=1)
    work = torch.empty_like(size)

    def budget(lam: Tensor) -> Tensor:
        torch.sub(size, lam[:, None], out=work)
        work.clamp_(min=0.0)
        torch.minimum(work, room, out=work)
        return work.sum(dim=1)

    def inside() -> tuple[Tensor, Tensor]:
        return (size > lo[:, None]) & (size < hi[:, None]), (low > lo[:, None]) & (low < hi[:, None])

    minus_inf = torch.full_like(size, float("-inf"))
    # Illinois (regula falsi that halves the stale end's value): budget is nearly linear at the scale of
    # many coordinates, so the secant through the bracket's ends closes in on lam in a few rounds.
    excess_lo = budget(lo) - eps  # > 0
    excess_hi = budget(hi) - eps  # <= 0
    side = torch.zeros_like(lo)
    rounds = 0
    leaving, saturating = inside()
    counts = leaving.sum(dim=1) + saturating.sum(dim=1)
    # Small images go straight to the finish; larger ones narrow the bracket first.
    while int(counts.max()) > FINISH_POINTS and rounds < MAX_ROUNDS:
        if rounds:
            # Tied breakpoints (a step moves many coordinates by the same amount) never separate: a
            # bracket whose inside breakpoints all share one value is as good as a small one.
            top = torch.maximum(
                torch.where(leaving, size, minus_inf).amax(dim=1),
                torch.where(saturating, low, minus_inf).amax(dim=1),
            )
            bottom = torch.minimum(
                torch.where(leaving, size, -minus_inf).amin(dim=1),
                torch.where(saturating, low, -minus_inf).amin(dim=1),
            )
            if bool(((counts <= FINISH_POINTS) | (top == bottom)).all()):
                break
        for _ in range(SECANT_ROUNDS):
            width = excess_lo - excess_hi
            mid = hi - excess_hi * (hi - lo) / torch.where(width > 0, width, torch.ones_like(width))
            mid = torch.where((mid > lo) & (mid < hi), mid, (lo + hi) / 2)
            excess = budget(mid) - eps
            above = excess > 0
            lo, excess_lo = torch.where(above, mid, lo), torch.where(above, excess, excess_lo)
            hi, excess_hi = torch.where(above, hi, mid), torch.where(above, excess_hi, excess)
            excess_hi = torch.where(above & (side > 0), excess_hi / 2, excess_hi)
            excess_lo = torch.where(~above & (side < 0), excess_lo / 2, excess_lo)
            side = torch.where(above, 1.0, -1.0).to(side)
        rounds += SECANT_ROUNDS
        leaving, saturating = inside()
        counts = torch.where(excess_hi == 0, 0, leaving.sum(dim=1) + saturating.sum(dim=1))
    count = int(counts.max())
    # The breakpoints inside the bracket, largest first (-inf pads rows with fewer), with the change of the
    # active count when the walk passes them downwards: +1 where a coordinate leaves zero, -1 where one
    # saturates.
    leaving_points = torch.where(leaving, size, minus_inf)
    points = torch.cat([leaving_points, torch.where(saturating, low, minus_inf)], dim=1)
    dim = size.shape[1]
    count = max(count, 1)
    points, order = points.topk(count, dim=1, sorted=True)
    real = torch.isfinite(points)
    entering = torch.where(order < dim, 1, -1) * real
    points = torch.where(real, points, lo[:, None])
    # Just below hi, a coordinate is active when size_i >= hi > low_i.
    active_top = ((size >= hi[:, None]) & (low < hi[:, None])).sum(dim=1)
    points = torch.cat([hi[:, None], points, lo[:, None]], dim=1)
    active = torch.cat([active_top[:, None], active_top[:, None] + entering.cumsum(dim=1)], dim=1)
    gaps = points[:, :-1] - points[:, 1:]
    start = budget(hi)
    budget_at = torch.cat([start[:, None], start[:, None] + (active * gaps).cumsum(dim=1)], dim=1)
    # The first point at which the budget reaches eps; lam lies between it and the one before.
    reached = budget_at >= eps[:, None]
    reached[:, -1] = True  # budget(lo) > eps: the crossing is in the bracket (round-off aside)
    j = reached.float().argmax(dim=1)
    rows = torch.arange(size.shape[0], device=size.device)
    before = (j - 1).clamp_min(0)
    slope = active[rows, before].clamp_min(1).to(size.dtype)
    lam = points[rows, before] - (eps - budget_at[rows, before]) / slope
    return torch.where(j == 0, hi, lam.clamp(min=lo, max=hi))


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
