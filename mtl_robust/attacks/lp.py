"""LP reference for the linearised attack step (docs/method.md, *Objective and closed form*).

One sign step maximises c . delta over the intersection of the step box [-alpha, alpha], the eps-ball
around the clean x0 and the pixel range. `solve_step_lp` states that literally as a CVXPY linear program
and solves it with HiGHS; `closed_form_step` is the attacks' own update (`project`); `crosscheck` compares
the two. A reference for tests and a validation callback, never on the attack's hot path.

Under L2 and L1 (`crosscheck_norm`) the reference is the linearised step over the norm's step set, stated
in CVXPY: max c . delta over ||delta||_2 <= alpha (a second-order cone program), or over ||delta||_1 <=
alpha with |delta_i| <= alpha / k (the L1 step's set, k its coordinate count; an LP, HiGHS), against the
closed form alpha * steepest(c). MINMAX-L2 is checked against its SOCP and MINMAX-L1 against its LP over the
L1 step set (`crosscheck_minmax_step`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mtl_robust.attacks.base import project
from mtl_robust.attacks.norms import steepest, step_count
from mtl_robust.values.norm import Norm

# A coordinate's LP and closed-form steps count as different beyond this (pixel units, [0, 1] scale);
# well above HiGHS's feasibility tolerance, far below any step size in use.
STEP_ATOL = 1e-6


def _as_numpy(t: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, Tensor):
        t = t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64).reshape(-1)


def _check_args(alpha: float, eps: float, lo: float, hi: float) -> None:
    if not (alpha > 0 and eps >= 0 and lo < hi):
        raise ValueError(
            f"need alpha > 0, eps >= 0 and lo < hi, got alpha={alpha}, eps={eps}, lo={lo}, hi={hi}"
        )


def solve_step_lp(
    c: Tensor | np.ndarray,
    x: Tensor | np.ndarray,
    x0: Tensor | np.ndarray,
    alpha: float,
    eps: float,
    lo: float = 0.0,
    hi: float = 1.0,
) -> tuple[np.ndarray, float]:
    """(delta, c . delta) maximising c . delta subject to |delta| <= alpha, |x + delta - x0| <= eps and
    lo <= x + delta <= hi, all coordinate-wise; flat float64 arrays. x must lie in the ball and the range.

    c is rescaled by its largest magnitude before solving: a positive factor leaves the optimal delta
    unchanged and keeps tiny gradient entries above the solver's optimality tolerance.
    """
    import cvxpy as cp

    _check_args(alpha, eps, lo, hi)
    c_np, x_np, x0_np = _as_numpy(c), _as_numpy(x), _as_numpy(x0)
    if not (c_np.shape == x_np.shape == x0_np.shape):
        raise ValueError(
            f"c, x and x0 need the same number of entries, got {c_np.size}, {x_np.size}, {x0_np.size}"
        )
    tol = 1e-6  # float32 inputs: x0 + eps rounded to float32 can sit a few 1e-8 outside the ball
    if np.any(np.abs(x_np - x0_np) > eps + tol) or np.any(x_np < lo - tol) or np.any(x_np > hi + tol):
        raise ValueError("x must lie in the eps-ball around x0 and in [lo, hi] (the LP would be infeasible)")
    scale = np.abs(c_np).max() if c_np.size else 0.0
    if scale == 0.0:
        return np.zeros_like(c_np), 0.0
    delta = cp.Variable(c_np.size)
    constraints = [
        delta <= alpha,
        delta >= -alpha,
        x_np + delta <= x0_np + eps,
        x_np + delta >= x0_np - eps,
        x_np + delta <= hi,
        x_np + delta >= lo,
    ]
    problem = cp.Problem(cp.Maximize((c_np / scale) @ delta), constraints)
    problem.solve(solver="HIGHS")
    if problem.status != cp.OPTIMAL or delta.value is None:
        raise RuntimeError(f"HiGHS did not solve the step LP: status {problem.status}")
    solution = np.asarray(delta.value, dtype=np.float64)
    return solution, float(c_np @ solution)


def closed_form_step(
    c: Tensor, x: Tensor, x0: Tensor, alpha: float, eps: float, lo: float = 0.0, hi: float = 1.0
) -> Tensor:
    """The attacks' step: clamp(clamp(x + alpha sign(c), x0 - eps, x0 + eps), lo, hi) - x."""
    if (lo, hi) == (0.0, 1.0):
        return project(x + alpha * torch.sign(c), x0, eps) - x
    ball = torch.minimum(torch.maximum(x + alpha * torch.sign(c), x0 - eps), x0 + eps)
    return torch.clamp(ball, lo, hi) - x


@dataclass(frozen=True)
class CrossCheckResult:
    gap: float  # |LP optimum - closed-form objective| / max(|LP optimum|, |closed form|); 0 when both are 0
    n_coords: int  # coordinates compared
    n_total: int  # coordinates in the input
    subsampled: bool  # True when only a random subset of n_coords coordinates was checked
    mismatched_coords: int  # coordinates with c != 0 whose steps differ by more than STEP_ATOL
    lp_objective: float
    closed_objective: float
    lp_time: float  # seconds
    closed_time: float  # seconds


def crosscheck(
    c: Tensor,
    x: Tensor,
    x0: Tensor,
    alpha: float,
    eps: float,
    max_coords: int | None = None,
    generator: torch.Generator | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
) -> CrossCheckResult:
    """Compare the closed-form step with the LP optimum on all coordinates, or on `max_coords` random ones.

    The problem decouples per coordinate, so a random subset is an exact sub-problem. Coordinates with
    c == 0 are excluded from the step comparison (any value is optimal there) but stay in the objectives.
    The closed form is evaluated in float64 on the same inputs, so the check is about the formula and
    its projection order, not float32 rounding.
    """
    _check_args(alpha, eps, lo, hi)
    if not (c.shape == x.shape == x0.shape):
        raise ValueError(
            f"c, x and x0 need the same shape, got {tuple(c.shape)}, {tuple(x.shape)}, {tuple(x0.shape)}"
        )
    flat = [t.detach().reshape(-1).to("cpu", torch.float64) for t in (c, x, x0)]
    n_total = flat[0].numel()
    subsampled = max_coords is not None and n_total > max_coords
    if subsampled:
        if max_coords < 1:
            raise ValueError(f"max_coords must be >= 1, got {max_coords}")
        index = torch.randperm(n_total, generator=generator)[:max_coords]
        flat = [t[index] for t in flat]
    c_s, x_s, x0_s = flat

    start = time.perf_counter()
    closed = closed_form_step(c_s, x_s, x0_s, alpha, eps, lo, hi).numpy()
    closed_time = time.perf_counter() - start
    start = time.perf_counter()
    lp_delta, lp_objective = solve_step_lp(c_s, x_s, x0_s, alpha, eps, lo, hi)
    lp_time = time.perf_counter() - start

    c_np = c_s.numpy()
    closed_objective = float(c_np @ closed)
    denominator = max(abs(lp_objective), abs(closed_objective))
    gap = abs(lp_objective - closed_objective) / denominator if denominator > 0 else 0.0
    mismatched = int(np.count_nonzero((c_np != 0) & (np.abs(lp_delta - closed) > STEP_ATOL)))
    return CrossCheckResult(
        gap=gap,
        n_coords=int(c_np.size),
        n_total=int(n_total),
        subsampled=bool(subsampled),
        mismatched_coords=mismatched,
        lp_objective=lp_objective,
        closed_objective=closed_objective,
        lp_time=lp_time,
        closed_time=closed_time,
    )


def crosscheck_minmax_step(
    problems: list[np.ndarray],
    step: float,
    max_coords: int | None = None,
    generator: torch.Generator | None = None,
    norm: Norm | None = None,
) -> CrossCheckResult:
    """The MINMAX direction's step against its primal LP (`minmax.solve_minmax_lp`), per sample; under L2
    against its SOCP (`minmax_l2.solve_minmax_l2_socp`, `norm`), under L1 against its LP over the L1 step
    set (`minmax_l1.solve_minmax_l1_lp`).

    `problems` are the per-sample task matrices of the step (`minmax.minmax_problems`). Unlike the sign step
    the problem couples coordinates through the worst task, so a subset of `max_coords` coordinates is a
    smaller problem of the same kind, solved both ways. Returns the worst sample's comparison.
    """
    from mtl_robust.attacks.minmax import crosscheck_minmax

    if not problems:
        raise ValueError("no samples to cross-check")
    n_total = int(problems[0].shape[1])
    subsampled = max_coords is not None and n_total > max_coords
    index = torch.randperm(n_total, generator=generator)[:max_coords].numpy() if subsampled else None
    worst, lp_time, closed_time = None, 0.0, 0.0
    for a in problems:
        if a.shape[0] == 0:  # no valid task in this sample: the step is 0 either way
            continue
        problem = a[:, index] if index is not None else a
        check = crosscheck_minmax(problem, step, norm)
        lp_time, closed_time = lp_time + check.lp_time, closed_time + check.closed_time
        if worst is None or check.gap > worst.gap:
            worst = check
    if worst is None:
        return CrossCheckResult(0.0, 0, n_total, subsampled, 0, 0.0, 0.0, 0.0, 0.0)
    return CrossCheckResult(
        gap=worst.gap,
        n_coords=worst.n_coords,
        n_total=n_total,
        subsampled=bool(subsampled),
        mismatched_coords=0,  # the optimal step need not be unique (ties): objectives are compared
        lp_objective=worst.lp_objective,
        closed_objective=worst.closed_objective,
        lp_time=lp_time,
        closed_time=closed_time,
    )


def solve_norm_step(c: np.ndarray, alpha: float, norm: Norm) -> tuple[np.ndarray, float]:
    """(delta, c . delta) maximising c . delta over the step set of `norm` (module docstring), in CVXPY."""
    import cvxpy as cp

    c = _as_numpy(c)
    scale = np.abs(c).max() if c.size else 0.0
    if scale == 0.0:
        return np.zeros_like(c), 0.0
    delta = cp.Variable(c.size)
    if norm.name == "l2":
        constraints = [cp.norm(delta, 2) <= alpha]
        solver = "CLARABEL"
    elif norm.name == "l1":
        constraints = [cp.norm(delta, 1) <= alpha, cp.abs(delta) <= alpha / step_count(norm, c.size)]
        solver = "HIGHS"
    else:
        constraints = [cp.abs(delta) <= alpha]
        solver = "HIGHS"
    problem = cp.Problem(cp.Maximize((c / scale) @ delta), constraints)
    problem.solve(solver=solver)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or delta.value is None:
        raise RuntimeError(f"the {norm.label} step program was not solved: status {problem.status}")
    solution = np.asarray(delta.value, dtype=np.float64)
    return solution, float(c @ solution)


def crosscheck_norm(
    c: Tensor,
    alpha: float,
    norm: Norm,
    max_coords: int | None = None,
    generator: torch.Generator | None = None,
) -> CrossCheckResult:
    """The closed-form step alpha * steepest(c) of `norm` against the program's optimum, per sample (c is
    [N, ...]); on `max_coords` random coordinates the problem is a smaller one of the same kind (its L1 step
    count taken on that size). Returns the worst sample's comparison."""
    flat = c.detach().flatten(1).to("cpu", torch.float64)
    n_total = int(flat.shape[1])
    subsampled = max_coords is not None and n_total > max_coords
    if subsampled:
        flat = flat[:, torch.randperm(n_total, generator=generator)[:max_coords]]
    worst: CrossCheckResult | None = None
    for row in flat:
        start = time.perf_counter()
        closed = (alpha * steepest(row[None], norm))[0].numpy()
        closed_time = time.perf_counter() - start
        start = time.perf_counter()
        _, lp_objective = solve_norm_step(row.numpy(), alpha, norm)
        lp_time = time.perf_counter() - start
        closed_objective = float(row.numpy() @ closed)
        denominator = max(abs(lp_objective), abs(closed_objective))
        gap = abs(lp_objective - closed_objective) / denominator if denominator > 0 else 0.0
        result = CrossCheckResult(
            gap,
            int(row.numel()),
            n_total,
            bool(subsampled),
            0,
            lp_objective,
            closed_objective,
            lp_time,
            closed_time,
        )
        if worst is None or result.gap > worst.gap:
            worst = result
    assert worst is not None
    return worst
