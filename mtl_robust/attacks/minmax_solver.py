"""The MINMAX step for a whole batch at once, in torch on the attack's device, with a certificate.

Per sample n, with the task matrix A_n = [a_1; ...; a_T] (a_t = grad L_t / L_t, flattened), the step solves

    maximise  min_t a_t . delta   subject to  |delta_i| <= s.

Its LP dual is min over the task simplex of s * ||sum_t lambda_t a_t||_1: any weights lambda give an upper
bound, any feasible delta a lower bound, and the two meet at the optimum. At the optimum delta_i is
s * sign(r_i) wherever r = lambda* . A is nonzero; only the tie coordinates (r_i = 0, at most T - 1 of them
in general position) carry fractional values that balance the tasks.

`solve_minmax_batch` exploits that structure, for all samples together:

1. weights near the optimum from exponentiated-gradient steps on a smoothed dual (batched tensor ops);
2. an active-set round: the m coordinates closest to a tie (smallest |r_i| relative to sum_t lambda_t
   |a_ti|) stay free in [-1, 1], every other coordinate is fixed to sign(r_i), and the restricted LP over
   the free coordinates (T rows, m + 1 columns per sample) is solved by HiGHS for every unconverged sample
   in one block-diagonal problem. Its solution is a feasible step (lower bound, evaluated exactly on the
   full problem) and its row duals are new weights (upper bound, evaluated exactly);
3. repeat with m growing fourfold until the bounds meet; the last possible round frees every coordinate,
   which is the full LP, so the loop always ends with a certified optimum.

Only T numbers per sample and the restricted LP (a few coordinates per sample) travel to the host; the
O(T * D) work stays on the device. Each restricted LP is scaled by the sample's current upper bound, so
badly scaled tasks (gradients apart by 1e7 and more) stay within HiGHS's tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog
from torch import Tensor

# Rounds stop once upper and lower bound agree to this relative tolerance; the restricted LPs are solved to
# HiGHS tolerances of 1e-10 relative to the value, so tighter would only add rounds.
STOP_GAP = 1e-9
# Values below this share of the largest value any step could reach (s * max_t ||a_t||_1) count as 0: the
# floor under every relative gap, so an optimum that is 0 up to round-off (opposite tasks) is not a 100% gap.
VALUE_FLOOR = 1e-9
WARM_START_ROUNDS = 12
FIRST_FREE = 16  # free coordinates per task in the first active-set round
GROWTH = 4
HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


@dataclass(frozen=True)
class BatchSolution:
    """Steps and certificates of a batch; every tensor on the device of the task matrices."""

    delta: Tensor  # [N, D] float64 optimal steps, |delta| <= s
    value: Tensor  # [N] min_t a_t . delta
    upper_bound: Tensor  # [N] s * ||lambda . A||_1 at the best weights seen
    weights: Tensor  # [N, T] those weights (0 on invalid tasks)
    floor: Tensor  # [N] value floor of each problem
    rounds: int  # active-set rounds the slowest sample needed

    @property
    def gap(self) -> Tensor:
        """[N] certified relative gap (upper bound - value) / max(|upper bound|, floor); 0 when both are 0."""
        scale = torch.maximum(self.upper_bound.abs(), self.floor)
        gap = (self.upper_bound - self.value).clamp_min(0.0)
        return torch.where(
            scale > 0, gap / scale.clamp_min(torch.finfo(scale.dtype).tiny), torch.zeros_like(gap)
        )


def check_batch(a: Tensor, valid: Tensor | None, s: float) -> Tensor:
    """The [N, T, D] validity mask, after rejecting bad input with a message that says what is wrong."""
    if a.dim() != 3 or a.shape[1] < 1:
        raise ValueError(f"the task matrices must be [N, T, D] with T >= 1, got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("the task matrix holds NaN or inf (a task loss or gradient is not finite)")
    if not (np.isfinite(s) and s >= 0):
        raise ValueError(f"the step bound s must be finite and >= 0, got {s}")
    if valid is None:
        return torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
    if valid.shape != a.shape[:2]:
        raise ValueError(f"valid must be [N, T] = {tuple(a.shape[:2])}, got {tuple(valid.shape)}")
    return valid.to(device=a.device, dtype=torch.bool)


def _dual_value(lam: Tensor, a: Tensor) -> Tensor:
    """[N] ||lambda_n . A_n||_1."""
    return torch.einsum("nt,ntd->nd", lam, a).abs().sum(dim=1)


def _simplex_quadratic_minimum(m: Tensor, valid: Tensor) -> Tensor:
    """[N, T] argmin of lambda^T M lambda over the simplex on the valid tasks, for small T: the minimiser
    of a convex quadratic on the simplex is the stationary point lambda_S ~ M_SS^-1 1 of its support S, so
    every support is tried (2^T - 1 small solves, one batched call) and the best nonnegative one kept."""
    n, t, _ = m.shape
    diag = torch.diagonal(m, dim1=1, dim2=2).clamp_min(1e-300).sqrt()
    m = m / (diag[:, :, None] * diag[:, None, :])  # equilibrated: weights many orders apart stay accurate
    supports = _supports(t, m.device)  # [S, T]
    keep = supports[None] & valid[:, None]  # [N, S, T]
    usable = (keep == supports[None]).all(dim=2)
    eye = torch.eye(t, dtype=m.dtype, device=m.device)
    sub = torch.where(keep[..., None] & keep[..., None, :], m[:, None], eye) + 1e-13 * eye
    rhs = torch.where(keep, 1.0 / diag[:, None], torch.zeros((), dtype=m.dtype, device=m.device))
    nu = torch.linalg.solve(sub, rhs.unsqueeze(3)).squeeze(3) * keep  # scaled coordinates
    ok = usable & ((nu * rhs).sum(dim=2) > 0) & (nu >= 0).all(dim=2)
    lam = nu / diag[:, None]
    lam = lam / torch.where(ok, lam.sum(dim=2), torch.ones_like(lam[..., 0]))[..., None]
    scaled = lam * diag[:, None]
    value = torch.einsum("nst,ntu,nsu->ns", scaled, m, scaled)
    value = torch.where(ok, value, torch.full_like(value, float("inf")))
    best = value.argmin(dim=1)
    chosen = lam[torch.arange(n, device=m.device), best]
    fallback = valid.double() / valid.sum(dim=1, keepdim=True).clamp_min(1)
    return torch.where(ok.any(dim=1)[:, None], chosen, fallback)


def _supports(t: int, device: torch.device) -> Tensor:
    """[2^T - 1, T] every nonempty subset of the tasks as a mask."""
    codes = torch.arange(1, 2**t, device=device)
    return (codes[:, None] >> torch.arange(t, device=device)) & 1 == 1


def _warm_start(a: Tensor, valid: Tensor) -> Tensor:
    """[N, T] weights near the dual optimum by iteratively reweighted least squares: |r_i| is replaced by
    r_i^2 / max(|r_i at the last weights|, mu), mu shrinking, and the quadratic minimised on the simplex.
    A head start only; the active-set rounds make it exact."""
    lam = valid.double() / valid.sum(dim=1, keepdim=True).clamp_min(1)
    mu = a.abs().flatten(1).amax(dim=1).clamp_min(1e-300)
    for _ in range(WARM_START_ROUNDS):
        r = torch.einsum("nt,ntd->nd", lam, a).abs()
        weight = 1.0 / torch.maximum(r, mu[:, None])
        m = torch.einsum("ntd,nd,nud->ntu", a, weight, a)
        lam = _simplex_quadratic_minimum(m, valid)
        mu = mu * 0.3
    return lam


def _restricted_lps(
    a_free: np.ndarray, fixed: np.ndarray, valid: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For every sample n, max z s.t. a_free[n] . x + fixed[n] >= z on its valid rows and |x| <= 1, all in
    one block-diagonal HiGHS problem. Returns x [N, m] and the row duals [N, T] (summing to 1 per sample).
    Rows are divided by `scale` [N] so every sample's value is of order 1 for the solver's tolerances."""
    n, t, m = a_free.shape
    columns = m + 1  # x then z
    coef = np.concatenate([-a_free / scale[:, None, None], np.ones((n, t, 1))], axis=2)
    coef = np.where(valid[:, :, None], coef, 0.0)
    rows = np.broadcast_to(np.arange(n * t).reshape(n, t, 1), coef.shape)
    cols = np.broadcast_to(np.arange(n)[:, None, None] * columns + np.arange(columns), coef.shape)
    a_ub = sp.csr_matrix((coef.ravel(), (rows.ravel(), cols.ravel())), shape=(n * t, n * columns))
    b_ub = np.where(valid, fixed / scale[:, None], 0.0).ravel()
    objective = np.zeros((n, columns))
    objective[:, -1] = -1.0
    bounds = np.tile(np.array([(-1.0, 1.0)] * m + [(-np.inf, np.inf)]), (n, 1))
    res = linprog(
        objective.ravel(), A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs", options=HIGHS_OPTIONS
    )
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on the minmax restricted LPs: {res.message}")
    x = np.clip(res.x.reshape(n, columns)[:, :m], -1.0, 1.0)
    duals = np.clip(-np.asarray(res.ineqlin.marginals).reshape(n, t), 0.0, None) * valid
    duals = duals / np.maximum(duals.sum(axis=1, keepdims=True), 1e-300)
    return x, duals


def solve_minmax_batch(a: Tensor, s: float, valid: Tensor | None = None) -> BatchSolution:
    """Exact maximiser of min_t a[n, t] . delta over |delta| <= s for every sample n (see the module doc).

    a: [N, T, D] task matrices (any float dtype; solved in float64 on a's device). valid: [N, T], False for
    a task left out of a sample (no valid pixels); a sample without any valid task gets the step 0.
    """
    valid = check_batch(a, valid, s)
    a = torch.where(
        valid[:, :, None], a.detach().double(), torch.zeros((), dtype=torch.float64, device=a.device)
    )
    n, t, d = a.shape
    # A positive factor per sample changes no optimiser; it keeps every sample's numbers near 1.
    scale = a.abs().flatten(1).amax(dim=1) if d else torch.zeros(n, dtype=torch.float64, device=a.device)
    solvable = (scale > 0) & valid.any(dim=1) & (s > 0)
    a_n = a / torch.where(solvable, scale, torch.ones_like(scale))[:, None, None]
    largest = a_n.abs().sum(dim=2).amax(dim=1)  # [N] the largest value any unit step could reach
    floor = VALUE_FLOOR * largest

    lam = _warm_start(a_n, valid)
    best_lam, upper = lam, _dual_value(lam, a_n)
    sigma = torch.sign(torch.einsum("nt,ntd->nd", lam, a_n))
    best_x = torch.zeros(n, d, dtype=torch.float64, device=a.device)  # the step 0: value 0, always feasible
    lower = torch.zeros(n, dtype=torch.float64, device=a.device)
    signs_value = _task_minimum(a_n, sigma, valid)
    better = signs_value > lower
    best_x = torch.where(better[:, None], sigma, best_x)
    lower = torch.maximum(lower, signs_value)

    def open_samples() -> Tensor:
        return solvable & (upper - lower > STOP_GAP * torch.maximum(upper.abs(), floor))

    rounds, free = 0, min(d, FIRST_FREE * t)
    todo = open_samples()
    while bool(todo.any()):
        rounds += 1
        idx = todo.nonzero().squeeze(1)
        x, lam_new = _active_set_round(
            a_n[idx], valid[idx], best_lam[idx], torch.maximum(upper, floor)[idx], free
        )
        value = _task_minimum(a_n[idx], x, valid[idx])
        improved = value > lower[idx]
        best_x[idx] = torch.where(improved[:, None], x, best_x[idx])
        lower[idx] = torch.maximum(lower[idx], value)
        new_upper = _dual_value(lam_new, a_n[idx])
        lowered = new_upper < upper[idx]
        upper[idx] = torch.where(lowered, new_upper, upper[idx])
        best_lam[idx] = torch.where(lowered[:, None], lam_new, best_lam[idx])
        if free == d:  # that was the full LP: exact up to HiGHS's tolerances
            break
        free = min(d, free * GROWTH)
        todo = open_samples()

    factor = torch.where(solvable, s * scale, torch.zeros_like(scale))
    delta = s * best_x * solvable[:, None]
    value = _task_minimum(a, delta, valid) * solvable
    return BatchSolution(
        delta=delta,
        value=value,
        upper_bound=upper * factor,
        weights=torch.where(
            solvable[:, None], best_lam, valid.double() / valid.sum(dim=1, keepdim=True).clamp_min(1)
        ),
        floor=VALUE_FLOOR * s * a.abs().sum(dim=2).amax(dim=1),
        rounds=rounds,
    )


def _task_minimum(a: Tensor, x: Tensor, valid: Tensor) -> Tensor:
    """[N] min over valid tasks of a_t . x; 0 for a sample without valid tasks."""
    per_task = torch.einsum("ntd,nd->nt", a, x)
    worst = torch.where(valid, per_task, torch.full_like(per_task, float("inf"))).amin(dim=1)
    return torch.where(valid.any(dim=1), worst, torch.zeros_like(worst))


def _active_set_round(
    a: Tensor, valid: Tensor, lam: Tensor, value_scale: Tensor, free: int
) -> tuple[Tensor, Tensor]:
    """One round for a sub-batch: the step with the `free` coordinates nearest a tie optimised exactly and
    the rest fixed to sign(lambda . A); returns that step [N, D] and the restricted LP's weights [N, T]."""
    r = torch.einsum("nt,ntd->nd", lam, a)
    weight = torch.einsum("nt,ntd->nd", lam, a.abs())
    # Coordinates no task's gradient touches are never ties (every value is optimal there).
    nearness = torch.where(weight > 0, r.abs() / weight.clamp_min(1e-300), torch.full_like(r, float("inf")))
    # A task with zero weight can still make a coordinate a tie: rank by the ratio, break ties by |a| mass.
    free_idx = torch.topk(nearness, free, dim=1, largest=False).indices  # [N, m]
    sigma = torch.sign(r)
    sigma.scatter_(1, free_idx, 0.0)
    fixed = torch.einsum("ntd,nd->nt", a, sigma)
    a_free = torch.gather(a, 2, free_idx[:, None, :].expand(-1, a.shape[1], -1))
    x_free, duals = _restricted_lps(
        a_free.cpu().numpy(), fixed.cpu().numpy(), valid.cpu().numpy(), value_scale.cpu().numpy()
    )
    x = sigma.scatter(1, free_idx, torch.from_numpy(x_free).to(a.device, a.dtype))
    return x, torch.from_numpy(duals).to(a.device, a.dtype)
