"""Shared machinery of all attack methods: the `Attack` base class, projection, history, pixel units.

Invariants every method keeps: the iterate stays in the ball of radius eps of the attack's norm (L-inf by
default; `attacks.norms`) around the clean x and in [0, 1] (`project`: ball first, then pixel range, as in
the paper code; for L1 the exact projection onto their intersection); the model runs in eval mode and
gets its per-submodule modes back; parameters are never changed and get no `.grad`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.attacks.attack_losses import build_attack_loss
from mtl_robust.attacks.checks import check_eps, check_input_image, check_steps, check_tasks
from mtl_robust.attacks.directions import Direction, build_direction
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.norms import project as project_norm
from mtl_robust.attacks.objective import Evaluation, LossFn, MultiTaskObjective
from mtl_robust.values.direction import DirectionSpec
from mtl_robust.values.norm import Norm, NormRefusal


def project(x: Tensor, x0: Tensor, eps: float) -> Tensor:
    """Clamp to the L-inf ball [x0 - eps, x0 + eps], then to the pixel range [0, 1]."""
    return torch.clamp(torch.minimum(torch.maximum(x, x0 - eps), x0 + eps), 0.0, 1.0)


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector [N] to broadcast against a batch like `like` ([N, 1, 1, 1])."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def best_per_sample(runs: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
    """The per-sample best x over runs `(x, objective)` (restarts), the earlier run on ties; one running best
    is kept, not every run."""
    best_x: Tensor | None = None
    best_f: Tensor | None = None
    for x, f in runs:
        if best_x is None or best_f is None:
            best_x, best_f = x, f
            continue
        better = f > best_f
        best_x, best_f = torch.where(per_sample(better, x), x, best_x), torch.where(better, f, best_f)
    if best_x is None:
        raise ValueError("best_per_sample needs at least one run")
    return best_x


@dataclass(frozen=True)
class StepRecord:
    """What an attack saw at one iterate x_k (k = 0 is the start point)."""

    step: int
    objective: Tensor  # [N] direction objective at x_k, on the CPU
    task_losses: dict[str, float]  # mean attack loss per task over samples with valid pixels
    step_size: float | None  # size of the step taken from x_k (mean over samples); None at the last iterate
    restart: int = 0
    step_sizes: Tensor | None = None  # per-sample step sizes (APGD), on the CPU

    @property
    def objective_mean(self) -> float:
        return float(self.objective.mean())


@dataclass(frozen=True)
class AttackResult:
    x_adv: Tensor
    history: list[StepRecord] = field(default_factory=list)
    queries: Tensor | None = None  # [N] model queries per image (query-based attacks), on the CPU


class Recorder:
    """Collects StepRecords when asked to; costs nothing otherwise."""

    def __init__(self, active: bool, valid: Mapping[str, Tensor]) -> None:
        self.active = active
        self.valid = valid
        self.history: list[StepRecord] = []
        self.queries: Tensor | None = None  # [N] model queries per image, kept by a query-based attack

    def add(self, step: int, ev: Evaluation, step_size: float | Tensor | None, restart: int = 0) -> None:
        if not self.active:
            return
        task_losses = {}
        for task, values in ev.task_losses.items():
            flags = self.valid[task]
            task_losses[task] = float(values[flags].mean()) if bool(flags.any()) else 0.0
        sizes = None
        if isinstance(step_size, Tensor):
            sizes = step_size.detach().reshape(-1).cpu()
            step_size = float(sizes.mean())
        self.history.append(StepRecord(step, ev.objective.cpu(), task_losses, step_size, restart, sizes))


def _clone_if_inference(t: Tensor) -> Tensor:
    # Tensors created under torch.inference_mode (Lightning's validation loop) cannot enter autograd.
    return t.clone() if t.is_inference() else t


class Attack:
    """Base of all methods: configure once, call many times.

    `attack(model, x, targets, losses) -> x_adv`; `attack.run(..., record=True) -> AttackResult` with history.

    * `model(x, tasks=[...]) -> dict[task, pred]`; x is RGB in [0, 1], [N, C, H, W].
    * `targets: dict[task, Tensor]`, batch-first.
    * `losses: Mapping[task, Task | callable]`: per-task, per-sample losses `(pred, target) -> Tensor[N]`,
      typically the tasks themselves or `task.loss`. Their keys are the attacked task set.
    * `direction`: a `Direction`, its text form ("total", "dgba", "single:seg", ...) or a `DirectionSpec`.
    * `attack_losses`: per-task overrides of the loss the attack ascends (callables or names such as
      "segpgd"); tasks not named use their training loss.
    * `seed`: None draws random starts from torch's global RNG; an int uses a fresh local generator on x's
      device each call, so the same seed gives the same x_adv.
    * `eot_samples`: k > 1 averages every gradient (and the objective iterates are judged by) over k
      forward/backward passes, for models that are random at evaluation time (EOT; 1: a single pass).
    * `norm`: the threat model ("linf", "l2", "l1"; `mtl_robust.values.norm`): the ball eps bounds and the
      steepest-ascent step every gradient method takes (`step`); a method that cannot attack under a norm
      refuses it here (`NORMS`).
    """

    # The norms a method can attack under; a subclass that supports fewer narrows this.
    NORMS: tuple[str, ...] = ("linf", "l2", "l1")

    def __init__(
        self,
        eps: float,
        *,
        direction: str | DirectionSpec | Direction = "total",
        attack_losses: Mapping[str, LossFn | str] | None = None,
        seed: int | None = None,
        eot_samples: int = 1,
        norm: str | Norm = "linf",
    ) -> None:
        self.norm = Norm.parse(norm)
        if self.norm.name not in self.NORMS:
            raise NormRefusal(
                f"{type(self).__name__} attacks under {'/'.join(self.NORMS)} only, "
                f"not attack.norm={self.norm}"
            )
        self.eps = check_eps(eps) if self.norm.is_default else self.norm.check_radius(eps)
        self.eot_samples = check_steps(eot_samples, "eot_samples")
        self.direction = build_direction(direction).for_norm(self.norm).within(self.eps)
        self.attack_losses: dict[str, LossFn] = {
            t: build_attack_loss(fn) if isinstance(fn, str) else fn for t, fn in (attack_losses or {}).items()
        }
        for task, fn in self.attack_losses.items():
            if not callable(fn):
                raise TypeError(f"attack_losses[{task!r}] must be callable or a loss name, got {fn!r}")
            if getattr(fn, "step_aware", False) and not callable(getattr(fn, "judge", None)):
                raise TypeError(
                    f"attack_losses[{task!r}] depends on the step but has no judge(pred, target): the "
                    "step-independent form iterates are compared by (see StepAwareLoss)"
                )
        self.seed = None if seed is None else int(seed)

    # -------------------------------------------------------------------------------------------- calls
    @property
    def total_steps(self) -> int:
        """Number of gradient steps (the K attack losses see as `total_steps`)."""
        return 1

    @property
    def gradients_per_image(self) -> int:
        """Objective gradients one call takes per image, restarts and EOT samples included (the planner's
        count; each costs the direction's `backwards(n_tasks)` backwards after one forward)."""
        return self.total_steps * int(getattr(self, "n_restarts", 1)) * self.eot_samples

    @property
    def forwards_per_image(self) -> int:
        """Forwards without a backward one call takes per image: the clean state a direction reads."""
        return int(self.direction.needs_init) * self.eot_samples

    @property
    def first_step_size(self) -> float:
        """Size of the first sign step (used by the LP cross-check)."""
        return self.eps

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        targets: Mapping[str, Tensor],
        losses: Mapping[str, Any],
        *,
        valid: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        return self.run(model, x, targets, losses, valid=valid).x_adv

    def with_losses(
        self, losses: Mapping[str, Any]
    ) -> Callable[[nn.Module, Tensor, Mapping[str, Tensor]], Tensor]:
        """This attack with its losses fixed: `f(model, x, targets) -> x_adv` (for evaluation passes)."""
        return functools.partial(self._call_with_losses, losses=losses)

    def _call_with_losses(
        self, model: nn.Module, x: Tensor, targets: Mapping[str, Tensor], losses: Mapping[str, Any]
    ) -> Tensor:
        return self.run(model, x, targets, losses).x_adv

    def bind(
        self,
        model: nn.Module,
        x: Tensor,
        targets: Mapping[str, Tensor],
        losses: Mapping[str, Any],
        *,
        valid: Mapping[str, Tensor] | None = None,
    ) -> MultiTaskObjective:
        """Validate the arguments and bind this attack's objective to one batch (no forward pass yet)."""
        check_input_image(x)
        if not isinstance(losses, Mapping) or not losses:
            raise ValueError("losses must be a non-empty mapping task -> loss function (or Task)")
        all_tasks = list(losses)
        needed = self.direction.tasks_needed(all_tasks)
        model_tasks = getattr(model, "tasks", None)
        check_tasks(
            needed, x, targets, losses, model_tasks if isinstance(model_tasks, (tuple, list)) else None
        )
        targets = {t: _clone_if_inference(targets[t]) for t in needed}
        return MultiTaskObjective(
            model,
            targets,
            losses,
            self.direction,
            needed,
            attack_losses=self.attack_losses,
            valid=valid,
            total_steps=self.total_steps,
            eot_samples=self.eot_samples,
        )

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        targets: Mapping[str, Tensor],
        losses: Mapping[str, Any],
        *,
        valid: Mapping[str, Tensor] | None = None,
        record: bool = False,
    ) -> AttackResult:
        with self._crafting(model, x, targets, losses, valid) as (objective, x0):
            recorder = Recorder(record, objective.valid)
            x_adv = self._perturb(objective, x0, recorder)
        queries = None if recorder.queries is None else recorder.queries.cpu()
        return AttackResult(x_adv.detach(), recorder.history, queries)

    def linear_objective(
        self,
        model: nn.Module,
        x: Tensor,
        targets: Mapping[str, Tensor],
        losses: Mapping[str, Any],
        *,
        valid: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(x0, c): the clean point and the direction whose sign the first step from x0 follows, i.e. the
        linear objective c . delta of that step (for the LP cross-check). Same mode/gradient guarantees."""
        with self._crafting(model, x, targets, losses, valid) as (objective, x0):
            grad = objective(x0, 0).grad
        assert grad is not None
        return x0, grad

    def score(
        self,
        model: nn.Module,
        x: Tensor,
        targets: Mapping[str, Tensor],
        losses: Mapping[str, Any],
        x_eval: Tensor,
        *,
        valid: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """[N] the objective this attack judges iterates by, at `x_eval` (state read at the clean x)."""
        with self._crafting(model, x, targets, losses, valid) as (objective, _):
            return objective(x_eval, self.total_steps, need_grad=False).objective

    @contextmanager
    def _crafting(
        self,
        model: nn.Module,
        x: Tensor,
        targets: Mapping[str, Tensor],
        losses: Mapping[str, Any],
        valid: Mapping[str, Tensor] | None,
    ) -> Iterator[tuple[MultiTaskObjective, Tensor]]:
        """The objective bound to this batch and the clean point, with autograd on and the model in eval
        mode (its previous per-module modes come back on exit)."""
        with torch.inference_mode(False):
            objective = self.bind(model, x, targets, losses, valid=valid)
            with eval_mode(model):
                x0 = x.detach().clamp(0.0, 1.0)
                objective.init_state(x0)
                yield objective, x0

    def _perturb(self, objective: MultiTaskObjective, x0: Tensor, recorder: Recorder) -> Tensor:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------- helpers
    def project(self, x: Tensor, x0: Tensor, eps: float | None = None) -> Tensor:
        """x moved into this attack's ball (radius eps, the attack's own by default) and the pixel range."""
        return project_norm(x, x0, self.eps if eps is None else eps, self.norm)

    def step(self, grad: Tensor) -> Tensor:
        """The unit-ball step of the direction's ascent under this attack's norm."""
        return self.direction.step(grad, self.norm)

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)

    def _record_final(
        self, objective: MultiTaskObjective, x: Tensor, recorder: Recorder, restart: int = 0
    ) -> None:
        if recorder.active:
            recorder.add(self.total_steps, objective(x, self.total_steps, need_grad=False), None, restart)

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters, in the order `__repr__` lists them."""
        out: dict[str, Any] = {"eps": self.eps, "direction": self.direction}
        if self.attack_losses:
            out["attack_losses"] = self.attack_losses
        if self.seed is not None:
            out["seed"] = self.seed
        if self.eot_samples != 1:
            out["eot_samples"] = self.eot_samples
        if not self.norm.is_default:
            out["norm"] = str(self.norm)
        return out

    def __repr__(self) -> str:
        def fmt(v: Any) -> str:
            return f"{v:.6g}" if isinstance(v, float) else repr(v)

        args = ", ".join(f"{k}={fmt(v)}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


def uniform_start(x0: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """Uniform random point of the eps-ball around x0, clamped to [0, 1]."""
    noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return project(x0 + (2.0 * noise - 1.0) * eps, x0, eps)
