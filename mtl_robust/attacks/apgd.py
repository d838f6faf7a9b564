"""APGD (Croce & Hein 2020) over a per-sample objective, under L-inf, L2 (auto-attack's APGD-L2: the same
schedule with normalised steps and the L2 projection) and L1 (auto-attack's APGD-L1, `_single_run_l1`:
sparse steps on the top coordinates with their adaptive sparsity, no momentum, the exact projection onto
the L1 ball intersected with the box).

Two variants:
* "reference" (default; fra31/auto-attack `autopgd_base.py`): integer checkpoints
  (`reference_checkpoints`), per-sample step initialised to 2 eps, momentum 0.75 (a = 1 on the first step),
  at each checkpoint the step is halved per sample where (1) at most rho * k of the last k steps increased
  the objective or (2) the step was not halved at the previous check and the best objective has not
  improved since, and halving restarts from x_best with grad_best. Random start (on by default) puts every
  sample on the ball boundary; `n_restarts` keeps the per-sample best over restarts (AutoAttack's
  `best_loss=True` mode, the one that fits dense objectives).
* "paper" (`APGD.paper()`, the DGBA code's variant, see docs/method.md): checkpoints from the paper's
  formula (`paper_checkpoints`), initial step eps / steps, no random start, halving where fewer than rho of
  the steps since the last checkpoint increased f or where eta and f are both unchanged since the previous
  one; halving resets to x_best only with `revised=True`.

Both track the best iterate by the direction's own per-sample objective (for DGBA sum_t log L_t, consistent
with its steps) rather than the paper code's batch-level quirk, and return it (docs/method.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from math import ceil
from typing import Any

import torch
from torch import Tensor

from mtl_robust.attacks.base import Attack, Recorder, best_per_sample, per_sample
from mtl_robust.attacks.checks import check_positive, check_steps
from mtl_robust.attacks.directions import Direction
from mtl_robust.attacks.norms import boundary_start, sparse_step
from mtl_robust.attacks.objective import LossFn, MultiTaskObjective
from mtl_robust.values.norm import Norm, NormRefusal

VARIANTS = ("reference", "paper")
# auto-attack's APGD-L1: checks every 4 % of the steps; the kept share of coordinates is the best point's
# support over 1.5; a step that does not shrink the support by 5 % is divided by 1.5, down to a tenth.
L1_CHECK_SHARE = 0.04
L1_SHRINK = 0.95
L1_SPARSITY_DIVISOR = 1.5
L1_STEP_DIVISOR = 1.5
L1_MIN_STEP_RATIO = 10.0


def reference_checkpoints(n_iter: int) -> list[int]:
    """Step counts after which the reference APGD checks its step size (N=100: 22, 41, ..., 99)."""
    n_iter = check_steps(n_iter, "n_iter")
    window = max(int(0.22 * n_iter), 1)
    decrease = max(int(0.03 * n_iter), 1)
    minimum = max(int(0.06 * n_iter), 1)
    out, position = [], window
    while position <= n_iter:
        out.append(position)
        window = max(window - decrease, minimum)
        position += window
    return out


def paper_checkpoints(n_iter: int) -> list[int]:
    """Checkpoints w_j = ceil(p_j * K) of the paper's formula, p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), for all p_j < 1, duplicates and w = 0 removed.

    Exact arithmetic (K=10: 3, 5, 6, 7, 8, 9, 10); the paper code's float rounding may differ.
    """
    n_iter = check_steps(n_iter, "n_iter")
    p = [Fraction(0), Fraction(22, 100)]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
        if nxt >= 1:
            break
        p.append(nxt)
    return sorted({ceil(v * n_iter) for v in p} - {0})


def _clip_ball(x: Tensor, x0: Tensor, eps: float) -> Tensor:
    return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(per_sample(mask, a), a, b)


class APGD(Attack):
    """Auto-PGD, L-inf. `steps` = n_iter; returns the per-sample best iterate (over restarts)."""

    def __init__(
        self,
        eps: float,
        steps: int = 10,
        n_restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        *,
        variant: str = "reference",
        revised: bool = False,
        direction: str | Direction = "total",
        attack_losses: Mapping[str, LossFn | str] | None = None,
        seed: int | None = 0,
        eot_samples: int = 1,
        norm: str | Norm = "linf",
    ) -> None:
        super().__init__(
            eps,
            direction=direction,
            attack_losses=attack_losses,
            seed=seed,
            eot_samples=eot_samples,
            norm=norm,
        )
        if variant not in VARIANTS:
            raise ValueError(f"APGD variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "paper" and self.norm.name == "l1":
            raise NormRefusal("apgd_paper (the DGBA code's APGD) has no L1 form; use method=apgd for L1")
        self.steps = check_steps(steps)
        self.n_restarts = check_steps(n_restarts, "n_restarts")
        self.rho = check_positive(rho, "rho")
        self.momentum = check_positive(momentum, "momentum")
        if self.rho > 1 or self.momentum > 1:
            raise ValueError(f"rho and momentum must lie in (0, 1], got rho={rho}, momentum={momentum}")
        self.random_start = bool(random_start)
        self.variant = variant
        self.revised = bool(revised)

    @classmethod
    def paper(
        cls,
        eps: float,
        steps: int = 10,
        *,
        revised: bool = False,
        direction: str | Direction = "total",
        attack_losses: Mapping[str, LossFn | str] | None = None,
        eot_samples: int = 1,
        norm: str | Norm = "linf",
    ) -> APGD:
        """The DGBA paper code's variant (docs/method.md): step eps/steps, no random start, no restarts."""
        return cls(
            eps,
            steps,
            n_restarts=1,
            random_start=False,
            variant="paper",
            revised=revised,
            direction=direction,
            attack_losses=attack_losses,
            seed=None,
            eot_samples=eot_samples,
            norm=norm,
        )

    @property
    def total_steps(self) -> int:
        return self.steps

    @property
    def first_step_size(self) -> float:
        if self.norm.name == "l1":
            return self.eps  # auto-attack's alpha = 1 for L1
        return 2.0 * self.eps if self.variant == "reference" else self.eps / self.steps

    def checkpoints(self) -> list[int]:
        return (
            reference_checkpoints(self.steps)
            if self.variant == "reference"
            else paper_checkpoints(self.steps)
        )

    def hparams(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eps": self.eps, "steps": self.steps, "variant": self.variant}
        if self.variant == "paper":
            out["revised"] = self.revised
        out.update(
            n_restarts=self.n_restarts, rho=self.rho, momentum=self.momentum, random_start=self.random_start
        )
        return {**out, **{k: v for k, v in super().hparams().items() if k != "eps"}}

    # ------------------------------------------------------------------------------------------ attack
    def _perturb(self, objective: MultiTaskObjective, x0: Tensor, recorder: Recorder) -> Tensor:
        generator = self._generator(x0.device)
        single_run = self._single_run_l1 if self.norm.name == "l1" else self._single_run
        runs = (single_run(objective, x0, recorder, r, generator) for r in range(self.n_restarts))
        return best_per_sample(runs)

    def _start(self, x0: Tensor, generator: torch.Generator | None) -> Tensor:
        if not self.random_start:
            return x0.clone()
        # On the sphere of the ball (L-inf: at least one coordinate on the boundary), as auto-attack.
        return boundary_start(x0, self.eps, self.norm, generator)

    def _single_run(
        self,
        objective: MultiTaskObjective,
        x0: Tensor,
        recorder: Recorder,
        restart: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        reference = self.variant == "reference"
        eps, n_steps = self.eps, self.steps
        x = self._start(x0, generator)
        ev = objective(x, 0)
        grad, f = ev.grad, ev.objective
        step = torch.full_like(f, self.first_step_size)
        x_best, grad_best, f_best = x.clone(), grad.clone(), f.clone()
        history = [f]
        checks = self.checkpoints()
        windows = dict(zip(checks, [c - p for c, p in zip(checks, [0, *checks[:-1]])]))
        # Reference bookkeeping: "reduced at the last check" starts true, so condition 2 cannot fire at first.
        reduced_last = torch.ones_like(f, dtype=torch.bool)
        halved_last = torch.zeros_like(f, dtype=torch.bool)
        f_best_last_check = f_best.clone()
        x_prev = x
        recorder.add(0, ev, step, restart)
        for i in range(n_steps):
            a = 1.0 if i == 0 else self.momentum
            previous_move = x - x_prev
            z = x + per_sample(step, x) * self.step(grad)
            # The reference also clamps z to the pixel range; the paper code only to the ball.
            z = self.project(z, x0) if reference or not self.norm.is_default else _clip_ball(z, x0, eps)
            x_prev = x
            x = self.project(x + a * (z - x) + (1.0 - a) * previous_move, x0)
            w = i + 1
            # No step follows the last iterate, so only its objective is needed (saves one backward).
            ev = objective(x, w, need_grad=w < n_steps)
            f = ev.objective
            history.append(f)
            improved = f > f_best
            x_best, f_best = _where(improved, x, x_best), torch.where(improved, f, f_best)
            if w == n_steps:
                recorder.add(w, ev, None, restart)
                break
            grad = ev.grad
            grad_best = _where(improved, grad, grad_best)
            if w in windows:
                k = windows[w]
                increases = torch.zeros_like(f)
                for j in range(w - k + 1, w + 1):
                    if j == 1 and reference:
                        # The reference compares the first step with an unwritten zero row (index wrap):
                        # with positive losses it counts as an increase; kept sign-independent here.
                        increases += 1.0
                    else:
                        increases += (history[j] > history[j - 1]).float()
                if reference:
                    halve = (increases <= k * self.rho) | (~reduced_last & (f_best_last_check >= f_best))
                    reduced_last = halve
                    f_best_last_check = f_best.clone()
                else:
                    halve = (increases < k * self.rho) | (~halved_last & (history[w] == history[w - k]))
                    halved_last = halve
                step = torch.where(halve, step / 2.0, step)
                if reference or self.revised:
                    x = _where(halve, x_best, x)
                    grad = _where(halve, grad_best, grad)
            recorder.add(w, ev, step, restart)
        return x_best, f_best

    def _single_run_l1(
        self,
        objective: MultiTaskObjective,
        x0: Tensor,
        recorder: Recorder,
        restart: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """auto-attack's APGD-L1: x <- proj_{L1 ball and box}(x + step * sparse(grad)), the sparse step
        sign(g)/count on the top share of coordinates; every 4 % of the steps the share becomes the best
        point's support over 1.5, and the step resets to eps (with a restart from the best point) where the
        support shrank by 5 %, else is divided by 1.5 (floored at eps / 10). No momentum."""
        n_steps, eps = self.steps, self.eps
        x = self._start(x0, generator)
        ev = objective(x, 0)
        grad, f = ev.grad, ev.objective
        n_fts = x0[0].numel()
        step = torch.full_like(f, self.first_step_size)
        share = torch.full_like(f, self.norm.step_share)  # 20 % by default, where auto-attack starts
        support_old = torch.full_like(f, float(n_fts))
        x_best, grad_best, f_best = x.clone(), grad.clone(), f.clone()
        window = max(int(L1_CHECK_SHARE * n_steps), 1)
        recorder.add(0, ev, step, restart)
        for i in range(n_steps):
            # auto-attack's threshold index (1 - share) * D in ascending order keeps D - index coordinates.
            index = ((1.0 - share) * n_fts).clamp(0, n_fts - 1).long()
            move = self.step(grad) if self.direction.solves_step else sparse_step(grad, n_fts - index)
            x = self.project(x + per_sample(step, x) * move, x0)
            w = i + 1
            ev = objective(x, w, need_grad=w < n_steps)
            f = ev.objective
            improved = f > f_best
            x_best, f_best = _where(improved, x, x_best), torch.where(improved, f, f_best)
            if w == n_steps:
                recorder.add(w, ev, None, restart)
                break
            grad = ev.grad
            grad_best = _where(improved, grad, grad_best)
            if w % window == 0:
                support = (x_best - x0).flatten(1).ne(0).sum(dim=1).to(f.dtype)
                shrank = support / support_old < L1_SHRINK
                share = support / n_fts / L1_SPARSITY_DIVISOR
                step = torch.where(shrank, torch.full_like(step, eps), step / L1_STEP_DIVISOR)
                step = step.clamp(eps / L1_MIN_STEP_RATIO, eps)
                support_old = support
                x = _where(shrank, x_best, x)
                grad = _where(shrank, grad_best, grad)
            recorder.add(w, ev, step, restart)
        return x_best, f_best
