"""MINMAX, the worst-task direction: per sample, the box step that raises the least-hurt task's relative loss.

Per sample, with per-task input gradients g_t and losses L_t (a_t = g_t / L_t), the step solves the LP

    maximise  min_t a_t . delta   subject to  |delta_i| <= s  for every coordinate i.

LP duality gives its value as s * min over the task simplex of ||sum_t lambda_t a_t||_1. `solve_minmax`
solves that dual exactly with a cutting-plane (Kelley) method: ||A^T lambda||_1 is the maximum of the linear
functions (A sigma) . lambda over sign vectors sigma, so each evaluation at a lambda_k adds the exact cut of
sigma_k = sign(A^T lambda_k), and a small master LP over the simplex (T + 1 variables) gives the next lambda.
The master's dual weights mu_k make delta = s * sum_k mu_k sigma_k a feasible step whose objective equals
the master's value, a lower bound; the best cut value is an upper bound. The loop ends when they meet, so
delta comes with a certificate of optimality. Where sum_t lambda_t a_t is nonzero, delta is s times its sign
(complementary slackness); on the few tie coordinates the mu-weighted mix is fractional and balances tasks.

`solve_minmax_lp` states the primal literally in CVXPY and solves it with HiGHS: the reference the tests,
the `lp_check` callback and `bench_minmax.py` compare against.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linprog
from torch import Tensor

from mtl_robust.attacks.directions import DEFAULT_TAU, Direction, _masked, register_direction

# The cutting planes stop when upper and lower bound agree to this relative tolerance (float64 sums over
# up to ~1e6 coordinates carry about 1e-12 relative round-off, so tighter is noise).
RELATIVE_TOL = 1e-11
MAX_ITERATIONS = 500
# Values below this share of the largest value any step could reach (s * max_t ||a_t||_1) count as 0: the
# floor under every relative gap, so an optimum that is 0 up to round-off (opposite tasks) is not a 100% gap.
VALUE_FLOOR = 1e-9
# The cutting planes also stop once the bounds agree to float64 round-off of that largest value.
ROUNDOFF = 1e-14


def value_floor(a: np.ndarray, s: float) -> float:
    return VALUE_FLOOR * s * float(np.abs(np.asarray(a, dtype=np.float64)).sum(axis=-1).max(initial=0.0))


def relative_gap(first: float, second: float, a: np.ndarray, s: float) -> float:
    """|first - second| / max(|first|, |second|, value_floor(a, s)); 0 when all are 0."""
    denominator = max(abs(first), abs(second), value_floor(a, s))
    return abs(first - second) / denominator if denominator > 0 else 0.0


@dataclass(frozen=True)
class MinMaxSolution:
    delta: np.ndarray  # [D] optimal step, |delta_i| <= s
    value: float  # min_t a_t . delta (the LP's optimum up to `gap`)
    weights: np.ndarray  # [T] optimal dual weights lambda on the task simplex
    upper_bound: float  # s * ||A^T lambda||_1 at the best lambda seen
    iterations: int
    floor: float = 0.0  # value_floor of the problem

    @property
    def gap(self) -> float:
        """Certified relative optimality gap (upper bound - value) / max(|upper bound|, floor)."""
        scale = max(abs(self.upper_bound), self.floor)
        return max(self.upper_bound - self.value, 0.0) / scale if scale > 0 else 0.0


def _check_problem(a: np.ndarray, s: float) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"the task matrix must be [T, D] with T >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("the task matrix holds NaN or inf (a task loss or gradient is not finite)")
    if not (np.isfinite(s) and s >= 0):
        raise ValueError(f"the step bound s must be finite and >= 0, got {s}")
    return a


def _master(cuts: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """min_{lambda in simplex} max_k cuts[k] . lambda -> (lambda, value, mu); mu: the cuts' dual weights."""
    k, t = cuts.shape
    c = np.zeros(t + 1)
    c[-1] = 1.0
    a_ub = np.hstack([cuts, -np.ones((k, 1))])
    a_eq = np.hstack([np.ones((1, t)), np.zeros((1, 1))])
    bounds = [(0.0, None)] * t + [(None, None)]
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(k), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on the minmax master LP: {res.message}")
    mu = np.clip(-np.asarray(res.ineqlin.marginals, dtype=np.float64), 0.0, None)
    total = mu.sum()
    mu = mu / total if total > 0 else np.full(k, 1.0 / k)
    return np.clip(res.x[:t], 0.0, None), float(res.x[-1]), mu


def _warm_start(a_n: np.ndarray, rounds: int = 40) -> list[np.ndarray]:
    """Weights near the dual optimum, for the first cuts: exponentiated-gradient steps on the smoothed dual
    sum_i sqrt((lambda . a_i)^2 + mu^2) with mu shrinking. A head start only: the cuts make it exact."""
    t = a_n.shape[0]
    lam = np.full(t, 1.0 / t)
    norm = float(np.abs(a_n).sum(axis=1).max())
    mu = 1e-2 * float(np.abs(a_n).max())
    visited = []
    for k in range(rounds):
        r = lam @ a_n
        grad = a_n @ (r / np.sqrt(r * r + mu * mu))
        lam = lam * np.exp(-np.clip(2.0 * grad / norm * (1.0 + k / 4), -50, 50))
        lam /= lam.sum()
        mu *= 0.7
        visited.append(lam.copy())
    return visited[-8:]


def solve_minmax(
    a: np.ndarray, s: float, tol: float = RELATIVE_TOL, max_iterations: int = MAX_ITERATIONS
) -> MinMaxSolution:
    """Exact maximiser of min_t a[t] . delta over the box |delta| <= s (see the module doc)."""
    a = _check_problem(a, s)
    t, d = a.shape
    scale = float(np.abs(a).max()) if a.size else 0.0
    if scale == 0.0 or s == 0.0 or d == 0:
        return MinMaxSolution(np.zeros(d), 0.0, np.full(t, 1.0 / t), 0.0, 0)
    a_n = a / scale  # a positive factor changes no optimiser; it keeps the master LP well scaled
    roundoff = ROUNDOFF * float(np.abs(a_n).sum(axis=1).max())
    # Start from every SINGLE direction, equal weights (DGBA's sign direction) and a smoothed guess.
    lambdas = [np.eye(t)[i] for i in range(t)]
    if t > 1:
        lambdas += [np.full(t, 1.0 / t), *_warm_start(a_n)]
    signs: list[np.ndarray] = []
    cuts: list[np.ndarray] = []
    upper, best_lambda = np.inf, lambdas[0]
    iterations = 0
    mu = np.ones(1)
    while iterations < max_iterations:
        iterations += 1
        for lam in lambdas:
            sigma = np.sign(lam @ a_n)
            cut = a_n @ sigma
            value = float(cut @ lam)  # = ||A^T lam||_1
            signs.append(sigma.astype(np.int8))
            cuts.append(cut)
            if value < upper:
                upper, best_lambda = value, lam
        lam, lower, mu = _master(np.asarray(cuts))
        if upper - lower <= max(tol * abs(upper), roundoff):
            break
        lambdas = [lam]
    delta_unit = np.zeros(d)
    for weight, sigma in zip(mu, signs):
        if weight > 0:
            delta_unit += weight * sigma
    np.clip(delta_unit, -1.0, 1.0, out=delta_unit)
    delta = s * delta_unit
    value = float((a @ delta).min())
    return MinMaxSolution(delta, value, best_lambda, s * scale * upper, iterations, value_floor(a, s))


def solve_minmax_lp(a: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """The primal LP literally, in CVXPY with HiGHS: (delta, optimum). A reference, not a hot path."""
    import cvxpy as cp

    a = _check_problem(a, s)
    scale = float(np.abs(a).max()) if a.size else 0.0
    if scale == 0.0 or s == 0.0:
        return np.zeros(a.shape[1]), 0.0
    delta = cp.Variable(a.shape[1])
    floor = cp.Variable()
    problem = cp.Problem(cp.Maximize(floor), [(a / scale) @ delta >= floor, delta <= s, delta >= -s])
    problem.solve(solver="HIGHS")
    if problem.status != cp.OPTIMAL or delta.value is None:
        raise RuntimeError(f"HiGHS did not solve the minmax LP: status {problem.status}")
    solution = np.asarray(delta.value, dtype=np.float64)
    return solution, float((a @ solution).min())


@dataclass(frozen=True)
class MinMaxCheck:
    gap: float  # relative_gap(LP optimum, closed form)
    lp_objective: float
    closed_objective: float
    lp_time: float
    closed_time: float
    n_coords: int


def crosscheck_minmax(a: np.ndarray, s: float) -> MinMaxCheck:
    """Solve one sample's problem both ways and compare the objectives."""
    start = time.perf_counter()
    closed = solve_minmax(a, s)
    closed_time = time.perf_counter() - start
    start = time.perf_counter()
    _, lp_value = solve_minmax_lp(a, s)
    lp_time = time.perf_counter() - start
    gap = relative_gap(lp_value, closed.value, a, s)
    return MinMaxCheck(gap, lp_value, closed.value, lp_time, closed_time, int(np.asarray(a).shape[1]))


def task_matrices(
    x: Tensor, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], tau: float = DEFAULT_TAU
) -> list[np.ndarray]:
    """Per sample, the [T_valid, D] float64 matrix of a_t = grad L_t / max(L_t, tau) (one backward per
    task; samples are independent in eval mode). Tasks without valid pixels in a sample are left out."""
    tasks = list(losses)
    per_task = []
    for i, task in enumerate(tasks):
        loss = _masked(losses[task].float(), valid[task])
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x, retain_graph=i < len(tasks) - 1, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(x)
        weight = 1.0 / loss.detach().clamp_min(tau)
        per_task.append((grad.detach().flatten(1).double() * weight.double()[:, None]).cpu().numpy())
    flags = torch.stack([valid[t].reshape(-1) for t in tasks]).cpu().numpy()  # [T, N]
    return [
        np.stack([per_task[k][n] for k in range(len(tasks)) if flags[k, n]])
        if flags[:, n].any()
        else np.zeros((0, per_task[0].shape[1]))
        for n in range(x.shape[0])
    ]


@register_direction()
class MinMax(Direction):
    """Worst-task direction: per sample the exact maximiser of min_t (grad L_t . delta) / L_t over the unit
    box (`solve_minmax`), so the least-hurt task's relative loss rises fastest to first order.

    Costs one backward per task plus a small LP per sample. Methods use the step as it is (`step` is the
    identity: its tie coordinates are fractional on purpose). The tracked objective is the least relative
    loss increase min_t log(L_t / L_t(x_clean)), what APGD keeps its best iterate by.
    """

    name = "minmax"
    needs_init = True

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def init(self, clean_losses: Mapping[str, Tensor], valid: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {t: clean_losses[t].detach().float().clamp_min(self.tau).log() for t in clean_losses}

    def objective(self, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], state: Any) -> Tensor:
        tasks = list(losses)
        logs = torch.stack([losses[t].float().clamp_min(self.tau).log() for t in tasks])
        if state is not None:
            logs = logs - torch.stack([state[t] for t in tasks])
        flags = torch.stack([valid[t].reshape(-1) for t in tasks])
        worst = torch.where(flags, logs, torch.full_like(logs, float("inf"))).amin(dim=0)
        return torch.where(flags.any(dim=0), worst, torch.zeros_like(worst))

    def gradient(
        self, x: Tensor, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], state: Any
    ) -> Tensor | None:
        steps = [
            solve_minmax(a, 1.0).delta if a.shape[0] else np.zeros(a.shape[1])
            for a in task_matrices(x, losses, valid, self.tau)
        ]
        return torch.from_numpy(np.stack(steps)).to(x.device, x.dtype).view_as(x)

    def step(self, grad: Tensor) -> Tensor:
        return grad

    def __repr__(self) -> str:
        return f"MinMax(tau={self.tau:g})"


def minmax_problems(
    attack: Any, model: torch.nn.Module, x: Tensor, targets: Mapping[str, Tensor], losses: Mapping[str, Any]
) -> list[np.ndarray]:
    """The per-sample task matrices of `attack`'s first step from the clean x (for the LP cross-check);
    same mode and gradient guarantees as the attack itself."""
    direction = attack.direction
    if not isinstance(direction, MinMax):
        raise TypeError(f"minmax_problems needs an attack with the minmax direction, got {direction!r}")
    with attack._crafting(model, x, targets, losses, None) as (objective, x0):
        with torch.enable_grad():
            x_leaf = x0.detach().requires_grad_(True)
            task_losses = objective._forward_losses(x_leaf, 0)
            return task_matrices(x_leaf, task_losses, objective.valid, direction.tau)
