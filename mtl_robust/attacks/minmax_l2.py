"""The MINMAX step under L2, for a whole batch: per sample the maximiser of min_t a_t . delta over the unit
L2 ball, with a certificate.

By minimax duality (the ball is compact and convex, the objective bilinear),

    max_{||delta||_2 <= 1} min_t a_t . delta  =  min_{lambda in simplex} ||sum_t lambda_t a_t||_2,

the distance from 0 to the convex hull of the task vectors a_t (when 0 lies outside it; else the value is 0
and delta = 0 is optimal). At the minimum-norm point r* = A^T lambda* the step is delta = r* / ||r*||:
every task with lambda_t > 0 gains exactly ||r*|| and no task less (the optimality condition of the
min-norm point, a_t . r* >= ||r*||^2). It is MGDA's min-norm problem (Sener & Koltun 2018), here ascending
the worst task instead of descending all.

The QP lives on the T x T Gram matrix G = A A^T, so its cost does not grow with the image: G costs one
pass over the gradients (T^2 D), the QP a few hundred tiny batched iterations. It is solved by accelerated
projected gradient on the simplex and polished by the exact solutions of every support's KKT system (T is
a handful of tasks, so 2^T - 1 supports); the best feasible point wins. Any weights give the upper bound
||A^T lambda||, the step's own value min_t a_t . delta the lower bound: `gap` certifies the step.

`solve_minmax_l2_socp` states the primal literally in CVXPY (a second-order cone program): the reference.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

PG_ITERATIONS = 300
# Values below this share of the largest task norm count as 0 (0 lies in the hull up to round-off).
VALUE_FLOOR = 1e-9
MAX_ENUMERATED_TASKS = 8


@dataclass(frozen=True)
class L2Solution:
    delta: Tensor  # [N, D] unit-norm steps (0 where the value is 0)
    value: Tensor  # [N] min_t a_t . delta
    upper_bound: Tensor  # [N] ||A^T lambda|| at the weights found
    weights: Tensor  # [N, T] on the simplex of valid tasks

    @property
    def gap(self) -> Tensor:
        """[N] certified relative gap (upper - value) / upper (0 where both are 0)."""
        return certified_gap(self.upper_bound, self.value)


def certified_gap(upper_bound: Tensor, value: Tensor) -> Tensor:
    """[N] (upper - value) / upper: the relative gap a dual bound certifies (0 where both are 0)."""
    gap = (upper_bound - value).clamp_min(0.0)
    return torch.where(upper_bound > 0, gap / upper_bound.clamp_min(1e-300), torch.zeros_like(gap))


def project_simplex(v: Tensor, valid: Tensor) -> Tensor:
    """Euclidean projection of each row of v [N, T] onto the simplex of its valid entries (0 elsewhere)."""
    big = torch.finfo(v.dtype).max / 4
    masked = torch.where(valid, v, torch.full_like(v, -big))
    ordered = masked.sort(dim=1, descending=True).values
    count = valid.sum(dim=1, keepdim=True).clamp_min(1)
    ranks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    cums = torch.where(ranks <= count, ordered, torch.zeros_like(ordered)).cumsum(dim=1)
    fits = (ordered - (cums - 1.0) / ranks > 0) & (ranks <= count)
    rho = fits.to(v.dtype).mul(ranks).amax(dim=1, keepdim=True).clamp_min(1)
    theta = (cums.gather(1, rho.long() - 1) - 1.0) / rho
    return torch.where(valid, (v - theta).clamp_min(0.0), torch.zeros_like(v))


def _quadratic(g: Tensor, lam: Tensor) -> Tensor:
    return torch.einsum("nt,nts,ns->n", lam, g, lam)


def _enumerate_supports(g: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, the best simplex point among the exact minimisers on each support (KKT: G_S lambda_S =
    mu 1, sum lambda_S = 1, lambda_S >= 0): ([N, T] weights, [N] their objective; inf where none fits)."""
    n, t = valid.shape
    best = torch.full((n,), float("inf"), dtype=g.dtype, device=g.device)
    best_lam = torch.zeros((n, t), dtype=g.dtype, device=g.device)
    if t > MAX_ENUMERATED_TASKS:
        return best_lam, best
    for size in range(1, t + 1):
        for support in itertools.combinations(range(t), size):
            idx = torch.tensor(support, device=g.device)
            sub = g[:, idx][:, :, idx]
            kkt = torch.zeros((n, size + 1, size + 1), dtype=g.dtype, device=g.device)
            kkt[:, :size, :size] = sub
            kkt[:, :size, size] = -1.0
            kkt[:, size, :size] = 1.0
            rhs = torch.zeros((n, size + 1), dtype=g.dtype, device=g.device)
            rhs[:, size] = 1.0
            solution = (torch.linalg.pinv(kkt) @ rhs[:, :, None])[:, :size, 0]
            lam = torch.zeros((n, t), dtype=g.dtype, device=g.device)
            lam[:, idx] = solution
            fits = (solution >= -1e-12).all(dim=1) & valid[:, idx].all(dim=1)
            fits &= (solution.sum(dim=1) - 1.0).abs() < 1e-9
            lam = lam.clamp_min(0.0)
            lam = lam / lam.sum(dim=1, keepdim=True).clamp_min(1e-300)
            value = _quadratic(g, lam)
            better = fits & (value < best)
            best = torch.where(better, value, best)
            best_lam = torch.where(better[:, None], lam, best_lam)
    return best_lam, best


def solve_minmax_l2_batch(a: Tensor, valid: Tensor | None = None) -> L2Solution:
    """The L2 MINMAX steps of task matrices a [N, T, D] (float64 advised), valid [N, T] tasks per sample."""
    if a.dim() != 3:
        raise ValueError(f"the task matrices must be [N, T, D], got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("the task matrix holds NaN or inf (a task loss or gradient is not finite)")
    n, t, _ = a.shape
    if valid is None:
        valid = torch.ones((n, t), dtype=torch.bool, device=a.device)
    valid = valid.to(a.device).bool()
    a = torch.where(valid[:, :, None], a, torch.zeros((), dtype=a.dtype, device=a.device))
    g = a @ a.transpose(1, 2)  # [N, T, T]
    lipschitz = 2.0 * torch.linalg.eigvalsh(g)[:, -1].clamp_min(1e-300)
    lam = project_simplex(torch.ones((n, t), dtype=a.dtype, device=a.device), valid)
    momentum, previous, speed = lam.clone(), lam.clone(), 1.0
    for _ in range(PG_ITERATIONS):  # FISTA on lambda^T G lambda over the simplex
        grad = 2.0 * (g @ momentum[:, :, None])[:, :, 0]
        lam = project_simplex(momentum - grad / lipschitz[:, None], valid)
        next_speed = (1.0 + (1.0 + 4.0 * speed * speed) ** 0.5) / 2.0
        momentum = lam + ((speed - 1.0) / next_speed) * (lam - previous)
        previous, speed = lam, next_speed
    exact, exact_value = _enumerate_supports(g, valid)
    better = exact_value < _quadratic(g, lam)
    lam = torch.where(better[:, None], exact, lam)
    r = (lam[:, :, None] * a).sum(dim=1)  # [N, D] the min-norm point
    upper = r.norm(dim=1)
    scale = a.norm(dim=2).amax(dim=1)
    positive = upper > VALUE_FLOOR * scale
    delta = torch.where(positive[:, None], r / upper.clamp_min(1e-300)[:, None], torch.zeros_like(r))
    gains = torch.einsum("ntd,nd->nt", a, delta)
    value = torch.where(valid, gains, torch.full_like(gains, float("inf"))).amin(dim=1)
    value = torch.where(valid.any(dim=1) & positive, value, torch.zeros_like(value))
    upper = torch.where(positive, upper, torch.zeros_like(upper))
    return L2Solution(delta, value, upper, lam)


def min_norm_weights(a: Tensor, valid: Tensor) -> Tensor:
    """[N, T] the simplex weights of the min-norm point of each sample's task hull (a [N, T, D]): exact from
    the supports' KKT systems on the Gram matrix for a handful of tasks (no projected-gradient iterations),
    else those of the full solve."""
    valid = valid.to(a.device).bool()
    a = torch.where(valid[:, :, None], a, torch.zeros((), dtype=a.dtype, device=a.device))
    weights, value = _enumerate_supports(a @ a.transpose(1, 2), valid)
    if bool(torch.isfinite(value[valid.any(dim=1)]).all()):
        return weights
    return solve_minmax_l2_batch(a, valid).weights


def solve_minmax_l2_socp(a: np.ndarray) -> tuple[np.ndarray, float]:
    """The primal literally, in CVXPY: max z s.t. A delta >= z, ||delta||_2 <= 1 (a reference)."""
    import cvxpy as cp

    a = np.asarray(a, dtype=np.float64)
    scale = float(np.abs(a).max()) if a.size else 0.0
    if scale == 0.0:
        return np.zeros(a.shape[1]), 0.0
    delta, floor = cp.Variable(a.shape[1]), cp.Variable()
    problem = cp.Problem(cp.Maximize(floor), [(a / scale) @ delta >= floor, cp.norm(delta, 2) <= 1])
    problem.solve(solver="CLARABEL")
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or delta.value is None:
        raise RuntimeError(f"the L2 minmax SOCP was not solved: status {problem.status}")
    step = np.asarray(delta.value, dtype=np.float64)
    step = step / max(np.linalg.norm(step), 1.0)
    return step, max(float((a @ step).min()), 0.0)
