"""STEALTH, the stealthy direction: raise the target tasks' relative loss, hold the other tasks near theirs.

Per sample, with a_t = grad L_t / max(L_t, tau) (DGBA's relative gradients, `minmax.task_tensor`), the
target set A and the stealth budget b (relative-loss units; the direction's argument, `stealth:0.05@depth`),
the step solves the linearised LP over the L-inf ball of radius r (the attack's eps):

    maximise  g . delta,  g = sum_{t in A} a_t,   subject to  |a_s . delta| <= b  for s not in A,
                                                               |delta_i| <= r.

Its dual has one variable per held task: phi(mu) = r ||g - sum_s mu_s a_s||_1 + b ||mu||_1, an upper bound
on the LP's value for every mu (weak duality), equal to it at the optimum. `solve_stealth` minimises phi by
exact coordinate descent (each coordinate's minimiser is a weighted median, O(D log D)), sets delta = r *
sign(residual) on every coordinate whose residual is not small, and solves the LP exactly (HiGHS) on the
`free` coordinates of smallest residual, the others fixed: the result is feasible, and phi at the duals of
that small LP certifies its gap (`StealthSolution.gap`; 0 up to solver tolerance in the tests and at
321x321, docs/attacker_goals.md). `solve_stealth_lp` states the primal literally in CVXPY (HiGHS): the
reference on small images.

The radius is the attack's eps (`Direction.within`; 8/255 for a direction built alone, e.g. by fast AT).
The direction returns delta / r, a step of the unit box that methods take as it is (`solves_step`). APGD
tracks sum_{t in A} log L_t minus the held tasks' excess relative change beyond the budget, over the budget,
so that an iterate that breaks stealth ranks below one that keeps it. L-inf only: the LP is the box's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl_robust.attacks.directions import DEFAULT_TAU, Direction, _masked, register_direction
from mtl_robust.attacks.minmax import task_tensor
from mtl_robust.values.norm import LINF, Norm, NormRefusal

DEFAULT_BUDGET = 0.05
DEFAULT_RADIUS = 8 / 255
# Coordinates solved exactly by the final LP (the smallest residuals); the rest take r * sign(residual).
FREE_COORDINATES = 2048
SWEEPS = 30


@dataclass(frozen=True)
class StealthSolution:
    delta: np.ndarray  # [D] the step, |delta_i| <= r
    value: float  # g . delta
    bound: float  # phi(mu) at the final duals: an upper bound on the LP's value
    held: np.ndarray  # [S] a_s . delta

    @property
    def gap(self) -> float:
        """Certified relative optimality gap (bound - value) / max(|bound|, tiny)."""
        return (self.bound - self.value) / max(abs(self.bound), 1e-12)


def dual_value(g: np.ndarray, a: np.ndarray, budget: float, radius: float, mu: np.ndarray) -> float:
    """phi(mu) = r ||g - a^T mu||_1 + b ||mu||_1 >= the LP's value for every mu."""
    return float(radius * np.abs(g - mu @ a).sum() + budget * np.abs(mu).sum())


def _weighted_median(points: np.ndarray, weights: np.ndarray) -> float:
    """A minimiser of sum_i w_i |x - p_i| (w >= 0)."""
    order = np.argsort(points, kind="stable")
    cum = np.cumsum(weights[order])
    return float(points[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _coordinate_descent(g: np.ndarray, a: np.ndarray, budget: float, radius: float) -> np.ndarray:
    """mu minimising phi coordinate by coordinate, each exactly: mu_s is the weighted median of the points
    residual_i / a_si (weights r |a_si|) and 0 (weight b)."""
    mu = np.zeros(a.shape[0])
    residual = g.copy()
    for _ in range(SWEEPS):
        before = mu.copy()
        for s in range(a.shape[0]):
            row = a[s]
            base = residual + mu[s] * row
            nz = row != 0
            if not nz.any():
                continue
            points = np.append(base[nz] / row[nz], 0.0)
            weights = np.append(radius * np.abs(row[nz]), budget)
            mu[s] = _weighted_median(points, weights)
            residual = base - mu[s] * row
        if np.allclose(mu, before, rtol=1e-9, atol=1e-12):
            break
    return mu


def _polish(
    g: np.ndarray, a: np.ndarray, budget: float, radius: float, mu: np.ndarray, free: int
) -> tuple[np.ndarray, np.ndarray]:
    """delta = r sign(residual) off the `free` smallest residuals, the LP solved exactly on them; returns
    (delta, the LP's duals as mu)."""
    from scipy.optimize import linprog

    residual = g - mu @ a
    order = np.argsort(np.abs(residual), kind="stable")
    free_idx = order[: min(free, g.size)]
    delta = radius * np.sign(residual)
    delta[free_idx] = 0.0
    fixed = a @ delta
    af = a[:, free_idx]
    s = a.shape[0]
    result = linprog(
        -g[free_idx],
        A_ub=np.vstack([af, -af]),
        b_ub=np.concatenate([budget - fixed, budget + fixed]),
        bounds=(-radius, radius),
        method="highs",
    )
    if result.status != 0:  # the fixed signs leave no feasible completion: free every coordinate's scale
        return _scaled_into_budget(delta, g, a, budget, radius, free_idx), mu
    delta[free_idx] = result.x
    marg = np.asarray(result.ineqlin.marginals)  # <= 0 for a max stated as min
    return delta, -(marg[:s] - marg[s:])


def _scaled_into_budget(
    delta: np.ndarray, g: np.ndarray, a: np.ndarray, budget: float, radius: float, free_idx: np.ndarray
) -> np.ndarray:
    """A feasible fallback: delta shrunk until every held task is within its budget."""
    held = np.abs(a @ delta).max(initial=0.0)
    return delta * min(1.0, budget / held) if held > 0 else delta


def solve_stealth(
    g: np.ndarray, a: np.ndarray, budget: float, radius: float, *, free: int = FREE_COORDINATES
) -> StealthSolution:
    """The stealthy step for one sample: g [D] the targets' summed relative gradient, a [S, D] the held
    tasks' (S may be 0), budget b, radius r."""
    g = np.asarray(g, dtype=np.float64).reshape(-1)
    a = np.asarray(a, dtype=np.float64).reshape(-1, g.size)
    if not (budget >= 0 and radius > 0):
        raise ValueError(f"stealth needs budget >= 0 and radius > 0, got {budget}, {radius}")
    if a.shape[0] == 0:
        delta = radius * np.sign(g)
        value = float(g @ delta)
        return StealthSolution(delta, value, value, np.zeros(0))
    mu = _coordinate_descent(g, a, budget, radius)
    delta, mu_lp = _polish(g, a, budget, radius, mu, free)
    bound = min(dual_value(g, a, budget, radius, mu), dual_value(g, a, budget, radius, mu_lp))
    return StealthSolution(delta, float(g @ delta), bound, a @ delta)


def solve_stealth_lp(g: np.ndarray, a: np.ndarray, budget: float, radius: float) -> tuple[np.ndarray, float]:
    """The reference: the primal stated literally in CVXPY, solved by HiGHS -> (delta, value)."""
    import cvxpy as cp

    g = np.asarray(g, dtype=np.float64).reshape(-1)
    a = np.asarray(a, dtype=np.float64).reshape(-1, g.size)
    delta = cp.Variable(g.size)
    constraints = [cp.abs(delta) <= radius]
    if a.shape[0]:
        constraints += [a @ delta <= budget, a @ delta >= -budget]
    problem = cp.Problem(cp.Maximize(g @ delta), constraints)
    problem.solve(solver="HIGHS")
    return np.asarray(delta.value).reshape(-1), float(problem.value)


@dataclass(frozen=True)
class StealthCheck:
    value: float
    reference: float
    gap: float  # (reference - value) / |reference|
    seconds: float
    reference_seconds: float


def crosscheck_stealth(g: np.ndarray, a: np.ndarray, budget: float, radius: float) -> StealthCheck:
    """`solve_stealth` against the CVXPY reference on one problem."""
    start = time.perf_counter()
    fast = solve_stealth(g, a, budget, radius)
    mid = time.perf_counter()
    _, reference = solve_stealth_lp(g, a, budget, radius)
    end = time.perf_counter()
    gap = (reference - fast.value) / max(abs(reference), 1e-12)
    return StealthCheck(fast.value, reference, gap, mid - start, end - mid)


@register_direction()  # its style is declared with the built-ins' (mtl_robust.values.direction)
class Stealth(Direction):
    """The stealthy direction over its target set (`stealth@depth`, `stealth:0.1@depth`); see the module."""

    name = "stealth"
    needs_init = True
    backward_per_task = True
    solves_step = True

    def __init__(
        self, budget: float = DEFAULT_BUDGET, tau: float = DEFAULT_TAU, radius: float = DEFAULT_RADIUS
    ):
        if not budget >= 0:
            raise ValueError(f"the stealth budget must be >= 0, got {budget}")
        if not (tau > 0 and radius > 0):
            raise ValueError(f"tau and radius must be > 0, got {tau}, {radius}")
        self.budget, self.tau, self.radius = float(budget), float(tau), float(radius)

    def tasks_needed(self, all_tasks: Sequence[str]) -> list[str]:
        if self.targets is None:
            raise ValueError(
                "the stealth direction needs its target set: e.g. stealth@depth or stealth:0.05@depth"
            )
        super().tasks_needed(all_tasks)  # unknown targets fail here
        return list(all_tasks)  # the held tasks' losses are constraints

    def backwards_per_gradient(self, n_tasks: int) -> int:
        return n_tasks  # the held tasks' gradients are the LP's constraints

    def within(self, eps: float) -> Direction:
        """A copy whose LP is posed over the attack's ball (radius eps), so the budget is in relative-loss
        units at the attack's own eps."""
        if float(eps) == self.radius:
            return self
        other = copy.copy(self)
        other.radius = float(eps)
        return other

    def for_norm(self, norm: Norm) -> Direction:
        if not Norm.parse(norm).is_default:
            raise NormRefusal(
                f"direction stealth solves the L-inf box's LP only; attack.norm={norm} is refused"
            )
        return self

    def init(self, clean_losses: Mapping[str, Tensor], valid: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {t: clean_losses[t].detach().float().clamp_min(self.tau) for t in clean_losses}

    def objective(self, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], state: Any) -> Tensor:
        targets = [t for t in losses if t in (self.targets or ())]
        value = sum(_masked(losses[t].float().clamp_min(self.tau).log(), valid[t]) for t in targets)
        if state is None:
            return value
        for s in losses:
            if s in targets:
                continue
            change = (losses[s].float() / state[s] - 1).abs()
            value = value - _masked((change - self.budget).clamp_min(0) / max(self.budget, 1e-3), valid[s])
        return value

    def gradient(
        self, x: Tensor, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], state: Any
    ) -> Tensor:
        return self.from_expectation(self.expectation_terms(x, losses, valid, state), x, valid, state)

    def expectation_terms(
        self, x: Tensor, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], state: Any
    ):
        return task_tensor(x, losses, valid, self.tau)[0]

    def from_expectation(self, terms: Tensor, x: Tensor, valid: Mapping[str, Tensor], state: Any) -> Tensor:
        tasks = list(valid)
        flags = torch.stack([valid[t].reshape(-1) for t in tasks], dim=1).cpu().numpy()
        is_target = np.array([t in (self.targets or ()) for t in tasks])
        a = terms.cpu().numpy()
        steps = []
        for n in range(a.shape[0]):
            g = a[n][is_target & flags[n]].sum(axis=0)
            held = a[n][~is_target & flags[n]]
            steps.append(solve_stealth(g, held, self.budget, self.radius).delta / self.radius)
        return torch.from_numpy(np.stack(steps)).to(x.dtype).to(x.device).view_as(x)

    def step(self, grad: Tensor, norm: Norm = LINF) -> Tensor:
        return grad

    def __repr__(self) -> str:
        return f"Stealth(budget={self.budget:g}, targets={self.targets})"
