"""The MINMAX step under L1, for a whole batch: per sample the exact maximiser of min_t a_t . delta over the
L1 step set, with a certificate.

The L1 step set of the project (`attacks.norms`) is S_k = {||delta||_1 <= 1, |delta_i| <= 1/k}, k = ceil(share
D) (`norms.step_count`; k = 1 is the bare L1 ball): the set whose maximiser of g . delta is every
direction's L1 step. Its support function is h_k(r) = max_{delta in S_k} r . delta = (sum of the k largest
|r_i|) / k, reached at a vertex: sign(r_i) / k on k coordinates of largest |r_i|. By minimax duality (S_k
is compact and convex, the objective bilinear),

    max_{delta in S_k} min_t a_t . delta  =  min_{lambda in simplex} h_k(sum_t lambda_t a_t),

the value of the LP. At optimal weights lambda* with r* = A^T lambda*, an optimal step is sign(r*_i) / k on
the coordinates strictly above the k-th largest |r*_i|, 0 strictly below, and fractional only on the few
ties at that threshold (complementary slackness). Two exact ways to it, both certified by the oracle (the
vertex that best answers weights lambda: the top-k sign step of A^T lambda, one pass over the
coordinates), whose value h_k(A^T lambda) bounds the optimum from above:

* The band LP: near good weights only the coordinates ranked near k can change side, so the LP is solved
  with the clearly-top coordinates fixed at sign(r_i) / k, those far below at 0 and a band of a few
  hundred to a few thousand coordinates around rank k free (HiGHS). Its step is feasible, its value a lower
  bound; the oracle at its duals meets it when the fixing was right. The first guess of the weights is the
  L2 MINMAX's (the min-norm point of the task hull, cheap on the T x T Gram matrix): at 321 x 321 it
  certifies at once (docs/threat_models.md).
* Column generation, where the band LP does not certify: the game between the tasks and the vertices of
  S_k restricted to a few vertices (a tiny LP: T rows, one column per vertex) gives a mixed step and task
  weights (its duals), the oracle at those weights a new column, until the restricted game's value meets
  the best bound (the vertices are finitely many, so it stops; the band LP is retried every few rounds).

The value min_t a_t . delta is measured on the step returned, and `gap` certifies it against the best bound.

The pixel range is not part of the problem, as for the L-inf LP and the L2 QP: the method projects the
iterate onto the ball and the box after the step (`norms.project`).

`solve_minmax_l1_lp` states the primal literally in CVXPY with HiGHS: the reference of the tests, the bench
and the cross-check callback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mtl_robust.attacks.minmax_l2 import certified_gap, min_norm_weights

MAX_ROUNDS = 500
# The LP restricted to the band of coordinates around the top-k threshold (POLISH_WINDOW or POLISH_SHARE of
# D on each side of rank k) is solved at the first guess and then every POLISH_EVERY rounds: once the
# weights are close it lands on the optimum in one solve, where cutting planes take many rounds to close.
POLISH_EVERY = 4
POLISH_WINDOW = 256
POLISH_SHARE = 0.006
# The restricted game stops once its value is within this share of the problem's scale of the oracle's bound.
TOLERANCE = 1e-10
# Values below this share of the largest task's own value count as 0 (no step helps every task).
VALUE_FLOOR = 1e-9
# HiGHS's feasibility tolerances for the restricted game (its default 1e-7 would cap the certified gap).
LP_TOLERANCE = 1e-10


@dataclass(frozen=True)
class L1Solution:
    delta: Tensor  # [N, D] steps in S_k (0 where the value is 0)
    value: Tensor  # [N] min_t a_t . delta
    upper_bound: Tensor  # [N] h_k(A^T lambda) at the best weights seen
    weights: Tensor  # [N, T] on the simplex of valid tasks
    rounds: int

    @property
    def gap(self) -> Tensor:
        """[N] certified relative gap (upper - value) / upper (0 where both are 0)."""
        return certified_gap(self.upper_bound, self.value)


def top_k_vertex(r: Tensor, k: int) -> Tensor:
    """[N, D] int8 signs of a vertex of S_k maximising r . delta (times k): sign(r_i) on exactly k coordinates
    of largest |r_i| per row, ties at the k-th value broken by `topk`. (A step that shares the unit budget
    among all tied coordinates is feasible but not always the maximiser, so the oracle takes k.) An
    unsorted `topk` is the fastest exact selection here (faster than `kthvalue` on CPU)."""
    index = r.abs().topk(k, dim=1, sorted=False).indices
    vertex = torch.zeros(r.shape, dtype=torch.int8, device=r.device)
    return vertex.scatter_(1, index, r.gather(1, index).sign().to(torch.int8))


def support_value(r: Tensor, k: int) -> Tensor:
    """[N] h_k(r) = (sum of the k largest |r_i|) / k."""
    return r.abs().topk(k, dim=1, sorted=False).values.sum(dim=1) / k


def _restricted_game(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """max z s.t. sum_j mu_j columns[j] >= z (every task), mu in the simplex: (mu, lambda, z) with lambda
    the task duals (on the simplex). `columns` [m, T], already scaled to entries of order 1."""
    from scipy.optimize import linprog

    m, t = columns.shape
    cost = np.zeros(m + 1)
    cost[-1] = -1.0  # maximise z
    upper = np.hstack([-columns.T, np.ones((t, 1))])  # z - sum_j mu_j c_jt <= 0
    equal = np.hstack([np.ones((1, m)), np.zeros((1, 1))])
    bounds = [(0.0, None)] * m + [(None, None)]
    options = {"primal_feasibility_tolerance": LP_TOLERANCE, "dual_feasibility_tolerance": LP_TOLERANCE}
    res = linprog(cost, A_ub=upper, b_ub=np.zeros(t), A_eq=equal, b_eq=[1.0], bounds=bounds, options=options)
    if res.status != 0:
        raise RuntimeError(f"the restricted MINMAX-L1 game was not solved: {res.message}")
    mu = np.clip(res.x[:m], 0.0, None)
    weights = np.clip(-res.ineqlin.marginals, 0.0, None)
    total = weights.sum()
    weights = weights / total if total > 0 else np.full(t, 1.0 / t)
    return mu / max(mu.sum(), 1e-300), weights, float(res.x[-1])


def _polish(a: Tensor, r: Tensor, k: int, window: int) -> tuple[Tensor, np.ndarray, float] | None:
    """The game's LP restricted to the coordinates near the top-k threshold of r = A^T lambda (lambda near
    optimal): the `k - window` largest |r_i| fixed at sign(r_i) / k, those below rank k + window at 0, the
    band between free. a [T, D] (valid tasks, scaled). Returns (delta [D] in S_k, task duals, value) or None
    when HiGHS fails; its value is a lower bound, and optimal once the oracle at its duals meets it."""
    from scipy.optimize import linprog

    t, dim = a.shape
    size = r.abs()
    top = size.topk(min(dim, k + window), sorted=False).indices
    in_fixed = torch.zeros(dim, dtype=torch.bool, device=r.device)
    if k > window:
        in_fixed[size.topk(k - window, sorted=False).indices] = True
    fixed = in_fixed.nonzero()[:, 0]
    band = top[~in_fixed[top]]
    fixed_step = r[fixed].sign() / k
    fixed_gain = (a[:, fixed] @ fixed_step).cpu().numpy()
    sub = a[:, band].cpu().numpy()
    m = sub.shape[1]
    cost = np.zeros(2 * m + 1)
    cost[-1] = -1.0  # maximise z; delta_band = p - q
    tasks = np.hstack([-sub, sub, np.ones((t, 1))])  # z - a_t . delta_band <= fixed gain
    spend = np.hstack([np.ones((1, 2 * m)), np.zeros((1, 1))])  # sum |delta_band| <= the budget left
    rows = np.vstack([tasks, spend])
    bounds_right = np.append(fixed_gain, max(1.0 - len(fixed) / k, 0.0))
    bounds = [(0.0, 1.0 / k)] * (2 * m) + [(None, None)]
    options = {"primal_feasibility_tolerance": LP_TOLERANCE, "dual_feasibility_tolerance": LP_TOLERANCE}
    res = linprog(cost, A_ub=rows, b_ub=bounds_right, bounds=bounds, options=options)
    if res.status != 0:
        return None
    delta = torch.zeros(dim, dtype=a.dtype, device=a.device)
    delta[fixed] = fixed_step
    delta[band] = torch.from_numpy(np.clip(res.x[:m] - res.x[m : 2 * m], -1.0 / k, 1.0 / k)).to(a)
    weights = np.clip(-res.ineqlin.marginals[:t], 0.0, None)
    total = weights.sum()
    return delta, (weights / total if total > 0 else np.full(t, 1.0 / t)), float(res.x[-1])


class _Game:
    """Per-sample state of the batched solve: the restricted games' columns (vertices), bounds, steps."""

    def __init__(self, a: Tensor, k: int, valid: Tensor) -> None:
        self.a, self.k, self.valid = a, k, valid
        n, t, self.dim = a.shape
        # The largest task's own value h_k(a_t) bounds the game's value: the scale of every tolerance.
        own = torch.stack([support_value(a[:, i], k) for i in range(t)], dim=1)
        self.scale = own.amax(dim=1).clamp_min(1e-300)
        self.lower = torch.zeros(n, dtype=a.dtype, device=a.device)
        self.upper = torch.full((n,), float("inf"), dtype=a.dtype, device=a.device)
        uniform = torch.where(valid, torch.ones_like(own), torch.zeros_like(own))
        self.weights = uniform / uniform.sum(dim=1, keepdim=True).clamp_min(1.0)
        self.steps: dict[int, Tensor] = {}  # the best step found per sample (its value is `lower`)
        self.signs: list[list[Tensor]] = [
            [torch.zeros(self.dim, dtype=torch.int8, device=a.device)] for _ in range(n)
        ]
        self.columns: list[list[np.ndarray]] = [[np.zeros(t)] for _ in range(n)]

    def open(self) -> Tensor:
        """[N] samples not yet certified (a sample without a valid task has nothing to solve)."""
        return self.valid.any(dim=1) & (self.upper - self.lower > TOLERANCE * self.scale)

    def oracle(self, rows: Tensor, lam: Tensor) -> None:
        """The best vertex against weights lam [len(rows), T]: a column of the restricted games, and the upper
        bound h_k(A^T lambda) (kept with its weights where it is the best so far)."""
        n = self.a.shape[0]
        sub = self.a if len(rows) == n else self.a[rows]  # no copy when every sample asks
        vertex = top_k_vertex(torch.einsum("nt,ntd->nd", lam, sub), self.k)
        gains = torch.einsum("ntd,nd->nt", sub, vertex.to(sub.dtype)) / self.k
        bound = (lam * gains).sum(dim=1)
        for j, row in enumerate(rows.tolist()):
            self.signs[row].append(vertex[j])
            self.columns[row].append((gains[j] / self.scale[row]).cpu().numpy())
            if bound[j] < self.upper[row]:
                self.upper[row], self.weights[row] = bound[j], lam[j]

    def polish(self, row: int, lam: Tensor) -> None:
        """The LP restricted to the band around the top-k threshold of A^T lam (`_polish`), then the oracle
        at its duals: optimal (certified) when the weights were close enough, a better bound otherwise."""
        tasks = self.valid[row]
        a_row = self.a[row, tasks] / self.scale[row]
        window = min(self.dim, max(POLISH_WINDOW, math.ceil(POLISH_SHARE * self.dim)))
        found = _polish(a_row, lam[tasks] @ a_row, self.k, window)
        if found is None:
            return
        step, duals, z = found
        weights = torch.zeros((1, lam.shape[0]), dtype=self.a.dtype, device=self.a.device)
        weights[0, tasks] = torch.from_numpy(duals).to(self.a)
        self.oracle(torch.tensor([row], device=self.a.device), weights)
        if z * self.scale[row] > self.lower[row]:
            self.lower[row], self.steps[row] = z * self.scale[row], step

    def restricted(self, row: int) -> Tensor:
        """Solve the restricted game of one sample: its mixed step (a lower bound) and the weights to ask the
        oracle at next."""
        tasks = self.valid[row].cpu().numpy()
        mu, duals, z = _restricted_game(np.asarray(self.columns[row])[:, tasks])
        if z * self.scale[row] > self.lower[row]:
            step = torch.zeros(self.dim, dtype=self.a.dtype, device=self.a.device)
            for j in np.flatnonzero(mu > 0):
                step += float(mu[j]) * self.signs[row][j].to(self.a.dtype)
            self.lower[row], self.steps[row] = z * self.scale[row], step / self.k
        lam = np.zeros(len(tasks))
        lam[tasks] = duals
        return torch.from_numpy(lam).to(self.a)


def solve_minmax_l1_batch(a: Tensor, k: int, valid: Tensor | None = None) -> L1Solution:
    """The L1 MINMAX steps of task matrices a [N, T, D] (float64 advised) over S_k, valid [N, T] tasks.

    First guess: the L2 MINMAX weights (the min-norm point of the task hull, `minmax_l2`; cheap on the Gram
    matrix), polished by the band LP and certified by the oracle; samples it does not certify go on by
    column generation, polished again every POLISH_EVERY rounds, until their bounds meet."""
    if a.dim() != 3:
        raise ValueError(f"the task matrices must be [N, T, D], got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("the task matrix holds NaN or inf (a task loss or gradient is not finite)")
    n, t, dim = a.shape
    k = int(k)
    if not 1 <= k <= dim:
        raise ValueError(f"the L1 step moves k coordinates, 1 <= k <= {dim}; got {k}")
    valid = (torch.ones((n, t), dtype=torch.bool) if valid is None else valid).to(a.device).bool()
    a = torch.where(valid[:, :, None], a, torch.zeros((), dtype=a.dtype, device=a.device))
    game = _Game(a, k, valid)
    everyone = torch.arange(n, device=a.device)
    guess = min_norm_weights(a, valid)
    for row in everyone[game.open()].tolist():
        game.polish(row, guess[row])
    rounds = 0
    rows = everyone[game.open()]
    if len(rows):  # column generation, from each task's own vertex and the uniform weights' vertex
        for i in range(t):
            asking = rows[valid[rows, i]]
            if len(asking):
                lam = torch.zeros((len(asking), t), dtype=a.dtype, device=a.device)
                lam[:, i] = 1.0
                game.oracle(asking, lam)
        uniform = valid[rows].to(a.dtype)
        game.oracle(rows, uniform / uniform.sum(dim=1, keepdim=True))
    while rounds < MAX_ROUNDS:
        rows = everyone[game.open()]
        if not len(rows):
            break
        rounds += 1
        asks = {row: game.restricted(row) for row in rows.tolist()}
        still = [row for row in asks if bool(game.open()[row])]
        if still:
            game.oracle(torch.tensor(still, device=a.device), torch.stack([asks[row] for row in still]))
        if rounds % POLISH_EVERY == 0:
            for row in everyone[game.open()].tolist():
                game.polish(row, game.weights[row])

    delta = torch.zeros((n, dim), dtype=a.dtype, device=a.device)
    for row, step in game.steps.items():
        delta[row] = step
    gains = torch.einsum("ntd,nd->nt", a, delta)
    value = torch.where(valid, gains, torch.full_like(gains, float("inf"))).amin(dim=1)
    positive = valid.any(dim=1) & (value > VALUE_FLOOR * game.scale)
    delta = torch.where(positive[:, None], delta, torch.zeros_like(delta))
    value = torch.where(positive, value, torch.zeros_like(value))
    upper = torch.where(valid.any(dim=1), game.upper, torch.zeros_like(game.upper))
    return L1Solution(delta, value, upper, game.weights, rounds)


def solve_minmax_l1_lp(a: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """The primal literally, in CVXPY with HiGHS: max z s.t. A delta >= z, ||delta||_1 <= 1, |delta_i| <= 1/k
    (a reference, not a hot path): (delta, optimum)."""
    import cvxpy as cp

    a = np.asarray(a, dtype=np.float64)
    scale = float(np.abs(a).max()) if a.size else 0.0
    if scale == 0.0:
        return np.zeros(a.shape[1]), 0.0
    delta, floor = cp.Variable(a.shape[1]), cp.Variable()
    constraints = [(a / scale) @ delta >= floor, cp.norm(delta, 1) <= 1, cp.abs(delta) <= 1.0 / k]
    problem = cp.Problem(cp.Maximize(floor), constraints)
    problem.solve(solver="HIGHS")
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or delta.value is None:
        raise RuntimeError(f"the L1 minmax LP was not solved: status {problem.status}")
    step = np.clip(np.asarray(delta.value, dtype=np.float64), -1.0 / k, 1.0 / k)
    step = step / max(np.abs(step).sum(), 1.0)
    return step, max(float((a @ step).min()), 0.0)
