"""MINMAX, the worst-task direction: per sample, the box step that raises the least-hurt task's relative loss.

Per sample, with per-task input gradients g_t and losses L_t (a_t = g_t / L_t), the step solves the LP

    maximise  min_t a_t . delta   subject to  |delta_i| <= s  for every coordinate i.

LP duality gives its value as s * min over the task simplex of ||sum_t lambda_t a_t||_1. The whole batch is
solved at once on the attack's device by `minmax_solver.solve_minmax_batch` (weights from reweighted least
squares, then exact active-set rounds): every step comes with a certificate, an upper bound from dual
weights that meets the step's own value. Where sum_t lambda_t a_t is nonzero, delta is s times its sign
(complementary slackness); on the few tie coordinates it is fractional and balances tasks. `solve_minmax` is
the same solver for one [T, D] NumPy problem.

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
from torch import Tensor

from mtl_robust.attacks.directions import DEFAULT_TAU, Direction, _masked, register_direction
from mtl_robust.attacks.minmax_l1 import solve_minmax_l1_batch, solve_minmax_l1_lp
from mtl_robust.attacks.minmax_l2 import solve_minmax_l2_batch, solve_minmax_l2_socp
from mtl_robust.attacks.minmax_solver import VALUE_FLOOR, solve_minmax_batch
from mtl_robust.attacks.norms import step_count
from mtl_robust.values.norm import LINF, Norm


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


def solve_minmax(a: np.ndarray, s: float) -> MinMaxSolution:
    """Exact maximiser of min_t a[t] . delta over the box |delta| <= s, for one [T, D] problem."""
    a = _check_problem(a, s)
    sol = solve_minmax_batch(torch.from_numpy(a)[None], s)
    return MinMaxSolution(
        delta=sol.delta[0].numpy(),
        value=float(sol.value[0]),
        weights=sol.weights[0].numpy(),
        upper_bound=float(sol.upper_bound[0]),
        iterations=sol.rounds,
        floor=value_floor(a, s),
    )


def _primal_lp(a: np.ndarray, s: float) -> np.ndarray:
    import cvxpy as cp

    delta = cp.Variable(a.shape[1])
    floor = cp.Variable()
    problem = cp.Problem(cp.Maximize(floor), [a @ delta >= floor, delta <= s, delta >= -s])
    problem.solve(solver="HIGHS")
    if problem.status != cp.OPTIMAL or delta.value is None:
        raise RuntimeError(f"HiGHS did not solve the minmax LP: status {problem.status}")
    return np.clip(np.asarray(delta.value, dtype=np.float64), -s, s)


def solve_minmax_lp(a: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """The primal LP literally, in CVXPY with HiGHS: (delta, optimum). A reference, not a hot path."""
    a = _check_problem(a, s)
    scale = float(np.abs(a).max()) if a.size else 0.0
    if scale == 0.0 or s == 0.0:
        return np.zeros(a.shape[1]), 0.0
    best, best_value = np.zeros(a.shape[1]), 0.0  # delta = 0 is feasible, with value 0
    # Badly scaled tasks (the worst task's terms far below the largest entry) get lost under HiGHS's absolute
    # tolerances, so the LP is also solved scaled by the smallest task and then by the best value found.
    row_peaks = np.abs(a).max(axis=1)
    for divisor in (scale, float(row_peaks[row_peaks > 0].min()), None):
        if divisor is None:
            if best_value <= 0:
                break
            divisor = best_value / s
        solution = _primal_lp(a / divisor, s)
        value = float((a @ solution).min())
        if value > best_value:
            best, best_value = solution, value
    return best, best_value


@dataclass(frozen=True)
class MinMaxCheck:
    gap: float  # relative_gap(LP optimum, closed form)
    lp_objective: float
    closed_objective: float
    lp_time: float
    closed_time: float
    n_coords: int


def crosscheck_minmax(a: np.ndarray, s: float, norm: Norm | None = None) -> MinMaxCheck:
    """Solve one sample's problem both ways and compare the objectives (under L2: the min-norm point of
    the task hull against the SOCP; under L1: the column-generation game against the LP over the L1 step
    set, its k taken on this problem's size as the direction takes it on the image; both scaled by the step
    size s)."""
    if norm is not None and norm.name in ("l2", "l1"):
        a = _check_problem(a, s)
        problem = torch.from_numpy(a)[None]
        k = step_count(norm, a.shape[1])
        start = time.perf_counter()
        if norm.name == "l2":
            closed_value = s * float(solve_minmax_l2_batch(problem).value[0])
        else:
            closed_value = s * float(solve_minmax_l1_batch(problem, k).value[0])
        closed_time = time.perf_counter() - start
        start = time.perf_counter()
        lp_value = s * (solve_minmax_l2_socp(a)[1] if norm.name == "l2" else solve_minmax_l1_lp(a, k)[1])
        lp_time = time.perf_counter() - start
        gap = relative_gap(lp_value, closed_value, a, s)
        return MinMaxCheck(gap, lp_value, closed_value, lp_time, closed_time, int(a.shape[1]))
    start = time.perf_counter()
    closed = solve_minmax(a, s)
    closed_time = time.perf_counter() - start
    start = time.perf_counter()
    _, lp_value = solve_minmax_lp(a, s)
    lp_time = time.perf_counter() - start
    gap = relative_gap(lp_value, closed.value, a, s)
    return MinMaxCheck(gap, lp_value, closed.value, lp_time, closed_time, int(np.asarray(a).shape[1]))


def task_tensor(
    x: Tensor, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], tau: float = DEFAULT_TAU
) -> tuple[Tensor, Tensor]:
    """([N, T, D] float64 task matrices a_t = grad L_t / max(L_t, tau), [N, T] validity) on x's device (one
    backward per task; samples are independent in eval mode). Invalid (sample, task) rows are 0."""
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
        per_task.append(grad.detach().flatten(1).double() * weight.double()[:, None])
    flags = torch.stack([valid[t].reshape(-1).to(x.device) for t in tasks], dim=1)  # [N, T]
    a = torch.stack(per_task, dim=1)
    return torch.where(flags[:, :, None], a, torch.zeros((), dtype=a.dtype, device=a.device)), flags


def task_matrices(
    x: Tensor, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], tau: float = DEFAULT_TAU
) -> list[np.ndarray]:
    """Per sample, the [T_valid, D] float64 NumPy matrix of `task_tensor` (tasks without valid pixels in a
    sample left out): the problems the LP reference checks."""
    a, flags = task_tensor(x, losses, valid, tau)
    a, flags = a.cpu().numpy(), flags.cpu().numpy()
    return [a[n][flags[n]] for n in range(a.shape[0])]


@register_direction()
class MinMax(Direction):
    """Worst-task direction: per sample the exact maximiser of min_t (grad L_t . delta) / L_t over the unit
    box (`solve_minmax`), so the least-hurt task's relative loss rises fastest to first order.

    Costs one backward per task plus the batched solve (`solve_minmax_batch`). Methods use the step as it
    is (`step` is the identity: its tie coordinates are fractional on purpose). The tracked objective is the
    least relative loss increase min_t log(L_t / L_t(x_clean)), what APGD keeps its best iterate by.
    """

    name = "minmax"
    needs_init = True
    backward_per_task = True
    solves_step = True

    def __init__(self, tau: float = DEFAULT_TAU, *, norm: Norm = LINF) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.norm = Norm.parse(norm)

    def for_norm(self, norm: Norm) -> Direction:
        """MINMAX solving its step in `norm`: the box LP (L-inf), the min-norm point of the hull of the
        task vectors (L2, `minmax_l2`) or the matrix game over the L1 step set's vertices (L1,
        `minmax_l1`)."""
        norm = Norm.parse(norm)
        return self if norm == self.norm else MinMax(self.tau, norm=norm).restricted_to(self.targets)

    def _solve(self, a: Tensor, flags: Tensor, x: Tensor) -> Tensor:
        if self.norm.name == "l2":
            return solve_minmax_l2_batch(a, flags).delta.to(x.dtype).view_as(x)
        if self.norm.name == "l1":
            k = step_count(self.norm, a.shape[2])
            return solve_minmax_l1_batch(a, k, flags).delta.to(x.dtype).view_as(x)
        return solve_minmax_batch(a, 1.0, flags).delta.to(x.dtype).view_as(x)

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
        a, flags = task_tensor(x, losses, valid, self.tau)
        return self._solve(a, flags, x)

    def expectation_terms(
        self, x: Tensor, losses: Mapping[str, Tensor], valid: Mapping[str, Tensor], state: Any
    ) -> Tensor:
        """[N, T, D] the task matrices a_t = grad L_t / L_t of one draw (the LP is solved on their mean)."""
        return task_tensor(x, losses, valid, self.tau)[0]

    def from_expectation(self, terms: Tensor, x: Tensor, valid: Mapping[str, Tensor], state: Any) -> Tensor:
        # The tasks in the order of the losses the terms were computed from (the objective keeps both so).
        flags = torch.stack([valid[t].reshape(-1).to(x.device) for t in valid], dim=1)  # [N, T]
        return self._solve(terms, flags, x)

    def step(self, grad: Tensor, norm: Norm = LINF) -> Tensor:
        return grad

    def __repr__(self) -> str:
        norm = "" if self.norm.is_default else f", norm={self.norm}"
        return f"MinMax(tau={self.tau:g}{norm})"


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
