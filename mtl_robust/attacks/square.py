"""Square attack (Andriushchenko et al., ECCV 2020), L-inf (and L2: `square_l2`), for multi-task models:
gradient-free search.

Each query proposes, per image, a new square of side s at a random position whose pixels move to x0 +/- eps
(one random sign per channel), keeps the rest of the current best point, and accepts the proposal where it
raises the direction's per-sample objective (`MultiTaskObjective` without gradients: DGBA's sum of log
losses, TOTAL, SINGLE(t), MINMAX's least relative increase, ...). The start is the original's vertical
stripes: one random sign per channel and image column. The square covers a fraction p of the image, and
p follows the original piecewise-constant schedule (p_init, then halved at 10, 50, 200, 500, 1000, 2000,
4000, 6000 and 8000 of 10000 queries) rescaled to the query budget (`p_fraction`). A proposal that would
leave the image unchanged (its square already sits at those signs) takes the opposite signs instead.

Every image draws its own square, position and signs, a fixed number of random values per query whatever
the other images do, and is accepted on its own objective, so an image's result does not depend on the
rest of the batch. The model only ever runs forward under `torch.no_grad`: a model whose forward is not
differentiable (quantisation, JPEG, randomised transforms) is attacked like any other.

Queries are counted per image (`AttackResult.queries`) as model forwards: one per proposal and one per
start, `queries` per restart in all, plus the clean forward of a direction that reads its state there
(MINMAX, static_relative). With `eot_samples=k` (a model random at evaluation time) every proposal is
judged by the mean objective of k forwards, and each of them is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.attacks import square_l2
from mtl_robust.attacks.base import Attack, Recorder, best_per_sample, per_sample, project
from mtl_robust.attacks.checks import check_positive, check_steps
from mtl_robust.attacks.directions import Direction
from mtl_robust.attacks.objective import Evaluation, LossFn, MultiTaskObjective
from mtl_robust.values.norm import Norm

# The original schedule: p is divided by 2**k after these fractions (of 10000) of the query budget.
SCHEDULE_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_SCALE = 10000

# Directions that differ from another only in how their gradient step is computed: without a gradient
# they are that other direction, and a row labelled with them would claim a difference that is not there.
SAME_OBJECTIVE_AS = {"sign_sum": "total", "dgba_reference": "dgba"}


def p_fraction(query: int, budget: int, p_init: float) -> float:
    """The fraction of the image the square covers at proposal `query` of `budget` (schedule rescaled)."""
    position = int(query / budget * SCHEDULE_SCALE)
    halvings = sum(position > point for point in SCHEDULE_POINTS)
    return p_init / 2**halvings


def square_side(p: float, height: int, width: int) -> int:
    """Side of a square covering about a fraction p of an image, at least 1 and at most its shorter side (as
    auto-attack, whose positions then run over 0..H-s: a square as wide as a non-square image's shorter side
    is one of the proposals)."""
    side = int(round((p * height * width) ** 0.5))
    return max(1, min(side, min(height, width)))


def check_gradient_free(direction: Direction, attack_losses: Mapping[str, Any]) -> None:
    """A direction and attack losses a search without gradients can follow; a clear error otherwise."""
    name = direction.name
    if name in SAME_OBJECTIVE_AS:
        raise ValueError(
            f"square: direction {name!r} differs from {SAME_OBJECTIVE_AS[name]!r} only in its gradient "
            f"step, which Square never takes; use direction={SAME_OBJECTIVE_AS[name]}"
        )
    if type(direction).objective is Direction.objective:
        raise ValueError(f"square: direction {name!r} defines no objective to search on, only a gradient")
    for task, fn in attack_losses.items():
        if getattr(fn, "step_aware", False):
            raise ValueError(
                f"square: attack loss {fn!r} of task {task!r} is a schedule over gradient steps, which "
                "Square never takes (it would search on the loss's step-independent form only); use a "
                "step-independent loss"
            )


class Square(Attack):
    """Square attack, L-inf: `queries` model queries per image and restart; the per-sample best over restarts.

    `p_init` is the starting fraction of the image a square covers (0.8 as AutoAttack, whose models are
    robust; the original's default for undefended classifiers was 0.05). `norm="l2"` makes Square-L2's
    proposals (auto-attack's, `square_l2`); L1 is refused with a clear error.
    """

    NORMS = ("linf", "l2")

    def __init__(
        self,
        eps: float,
        queries: int = 5000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        *,
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
        check_gradient_free(self.direction, self.attack_losses)
        self.queries = check_steps(queries, "queries")
        self.p_init = check_positive(p_init, "p_init")
        if self.p_init > 1:
            raise ValueError(f"p_init must lie in (0, 1] (a fraction of the image), got {p_init}")
        self.n_restarts = check_steps(n_restarts, "n_restarts")

    @property
    def queries_per_image(self) -> int:
        """Model forwards per image of one call (what `AttackResult.queries` counts)."""
        return (self.n_restarts * self.queries + int(self.direction.needs_init)) * self.eot_samples

    @property
    def gradients_per_image(self) -> int:
        return 0

    @property
    def forwards_per_image(self) -> int:
        return self.queries_per_image

    def hparams(self) -> dict[str, Any]:
        out = {"eps": self.eps, "queries": self.queries, "p_init": self.p_init, "n_restarts": self.n_restarts}
        return {**out, **{k: v for k, v in super().hparams().items() if k != "eps"}}

    def bind(self, model: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> MultiTaskObjective:
        if isinstance(x, Tensor) and x.dim() != 4:
            raise ValueError(f"square needs images [N, C, H, W], got shape {tuple(x.shape)}")
        return super().bind(model, x, *args, **kwargs)

    def linear_objective(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        raise ValueError("square takes no gradient step, so it has no linear objective to cross-check")

    def with_losses(self, losses: Mapping[str, Any]) -> QueryCountingAttack:
        """This attack with its losses fixed, counting the queries it spends (an evaluation cell's attack)."""
        return QueryCountingAttack(self, losses)

    # ------------------------------------------------------------------------------------------ attack
    def _perturb(self, objective: MultiTaskObjective, x0: Tensor, recorder: Recorder) -> Tensor:
        generator = self._generator(x0.device)
        # The clean forward `init_state` ran for a direction that reads its state there.
        recorder.queries = torch.full(
            (x0.shape[0],), int(self.direction.needs_init) * self.eot_samples, dtype=torch.int64
        )
        runs = (self._single_run(objective, x0, recorder, r, generator) for r in range(self.n_restarts))
        return best_per_sample(runs)

    def _signs(self, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
        draws = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return (2 * draws - 1).to(like.dtype)

    def _single_run(
        self,
        objective: MultiTaskObjective,
        x0: Tensor,
        recorder: Recorder,
        restart: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        n, channels, height, width = x0.shape
        queries = recorder.queries
        assert queries is not None, "_perturb starts the count"
        if self.norm.name == "l2":
            x_best = square_l2.start(x0, self.eps, lambda shape: self._signs(shape, x0, generator), generator)
        else:
            stripes = self._signs((n, channels, 1, width), x0, generator)
            x_best = project(x0 + self.eps * stripes, x0, self.eps)
        best = objective(x_best, 0, need_grad=False)
        queries += self.eot_samples
        recorder.add(0, best, None, restart)
        rows = torch.arange(height, device=x0.device)
        cols = torch.arange(width, device=x0.device)
        for query in range(1, self.queries):
            p = p_fraction(query - 1, self.queries, self.p_init)
            if self.norm.name == "l2":
                signs = lambda shape: self._signs(shape, x0, generator)  # noqa: E731
                x_new = square_l2.proposal(x0, x_best, self.eps, p, signs, generator)
            else:
                x_new = self._linf_proposal(x0, x_best, p, rows, cols, generator)
            ev = objective(x_new, 0, need_grad=False)
            queries += self.eot_samples
            improved = ev.objective > best.objective
            x_best = torch.where(per_sample(improved, x_best), x_new, x_best)
            best = _accept(improved, ev, best)
            recorder.add(query, best, None, restart)
        return x_best, best.objective

    def _linf_proposal(
        self,
        x0: Tensor,
        x_best: Tensor,
        p: float,
        rows: Tensor,
        cols: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Per image a square of side ~sqrt(p H W) at a random position moved to x0 +/- eps (a sign per
        channel); the opposite signs where that would leave the image unchanged."""
        n, channels, height, width = x0.shape
        side = square_side(p, height, width)
        top = torch.randint(0, height - side + 1, (n,), generator=generator, device=x0.device)
        left = torch.randint(0, width - side + 1, (n,), generator=generator, device=x0.device)
        signs = self._signs((n, channels, 1, 1), x0, generator)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
        window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [N, 1, H, W]
        x_new = torch.where(window, (x0 + self.eps * signs).clamp(0.0, 1.0), x_best)
        unchanged = (x_new == x_best).flatten(1).all(dim=1)
        flip = window & per_sample(unchanged, window)
        return torch.where(flip, (x0 - self.eps * signs).clamp(0.0, 1.0), x_new)


def _accept(improved: Tensor, proposal: Evaluation, best: Evaluation) -> Evaluation:
    """Per sample, the proposal's evaluation where it improved, else the best one so far."""
    losses = {t: torch.where(improved, v, best.task_losses[t]) for t, v in proposal.task_losses.items()}
    return Evaluation(torch.where(improved, proposal.objective, best.objective), losses, None)


class QueryTally:
    """Queries and images summed over batches: the mean queries per image a results row records."""

    def __init__(self) -> None:
        self.queries = 0
        self.images = 0

    def add(self, queries: Tensor) -> None:
        self.queries += int(queries.sum())
        self.images += int(queries.numel())

    @property
    def per_image(self) -> float:
        return self.queries / self.images if self.images else 0.0


class QueryCountingAttack:
    """`(model, x, targets) -> x_adv` of a Square attack with fixed losses; `row_results` adds the mean
    queries per image of the batches run since its last call to an evaluation row."""

    def __init__(self, attack: Square, losses: Mapping[str, Any]) -> None:
        self.attack = attack
        self.losses = losses
        self.tally = QueryTally()

    def __call__(self, model: nn.Module, x: Tensor, targets: Mapping[str, Tensor]) -> Tensor:
        result = self.attack.run(model, x, targets, self.losses)
        assert result.queries is not None
        self.tally.add(result.queries)
        return result.x_adv

    def row_results(self, clean: Any = None) -> dict[str, Any]:
        out = {"queries_per_image": self.tally.per_image}
        self.tally = QueryTally()
        return out
