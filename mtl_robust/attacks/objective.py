"""Evaluate a direction's per-sample objective and ascent direction on one batch, at any iterate.

`MultiTaskObjective` binds (model, targets, per-task losses, direction) for one attack call: the methods
only ever see `objective(x, step) -> Evaluation`. The model is called through `forward_tasks`: as
`model(x, tasks=[...])` with just the tasks the direction needs when its forward accepts `tasks`, else as
`model(x)`; the gradient is taken w.r.t. the input only (`torch.autograd.grad`), so
parameters never receive `.grad`.

It is the one place a direction meets a batch: the attacks, the ensemble's members, every fast-AT variant,
GradAlign and the CO watch all take a direction's state (`init_state`), per-sample objective and ascent
direction (`ascent`) from it, and the step from `Direction.step`, so a direction that overrides `gradient`
or `step`, or needs `init`, behaves the same in all of them.

Two objectives per iterate (docs/method.md *Judging iterates*): the ascent direction follows the attack
losses at the current step index (SegPGD's weights move with it), while `Evaluation.objective`, which
APGD keeps its best iterate by and adapts its step with, uses each step-dependent loss's step-independent
`judge` form, so values from different steps compare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.attacks.directions import Direction
from mtl_robust.attacks.model_call import forward_tasks

LossFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Evaluation:
    """Objective and direction at one iterate. Tensors are detached."""

    objective: Tensor  # [N] float32, the direction's per-sample objective of the judged losses
    task_losses: dict[str, Tensor]  # task -> [N] float32 judged attack losses (step-independent)
    grad: Tensor | None  # ascent direction, shape of x (None when not requested)


@dataclass(frozen=True)
class StepLosses:
    """Per-task [N] float32 attack losses at one iterate: `ascent` at the step index (what the direction
    follows), `judged` step-independent (what iterates are compared by); the same tensors for losses that
    do not depend on the step."""

    ascent: dict[str, Tensor]
    judged: dict[str, Tensor]


def resolve_loss(obj: Any, task: str) -> tuple[LossFn, Callable[[Tensor], Tensor] | None]:
    """(loss function, valid_count function or None) from a Task-like object or a loss callable.

    A Task (anything with a callable `.loss`) or a bound `task.loss` also tells which samples have valid
    pixels (`valid_count`); a plain callable does not, and every sample then counts as valid.
    """
    if callable(getattr(obj, "loss", None)):
        return obj.loss, getattr(obj, "valid_count", None)
    if callable(obj):
        owner = getattr(obj, "__self__", None)
        return obj, getattr(owner, "valid_count", None)
    raise TypeError(f"losses[{task!r}] must be a Task or a callable (pred, target) -> Tensor[N], got {obj!r}")


def _valid_flags(
    task: str, target: Tensor, count_fn: Callable[[Tensor], Tensor] | None, given: Mapping[str, Tensor] | None
) -> Tensor:
    n = target.shape[0]
    if given is not None and task in given:
        flags = torch.as_tensor(given[task], device=target.device)
    elif count_fn is not None:
        flags = count_fn(target) > 0
    else:
        return torch.ones(n, dtype=torch.bool, device=target.device)
    flags = flags.to(device=target.device).bool().reshape(-1)
    if flags.shape[0] != n:
        raise ValueError(
            f"validity of task {task!r} must have one flag per sample ({n}), got {tuple(flags.shape)}"
        )
    return flags


class MultiTaskObjective:
    """The objective of `direction` on one batch (targets fixed), evaluated at any iterate x."""

    def __init__(
        self,
        model: nn.Module,
        targets: Mapping[str, Tensor],
        losses: Mapping[str, Any],
        direction: Direction,
        tasks: Sequence[str],
        *,
        attack_losses: Mapping[str, LossFn] | None = None,
        valid: Mapping[str, Tensor] | None = None,
        total_steps: int = 1,
        eot_samples: int = 1,
    ) -> None:
        self.model = model
        self.eot_samples = int(eot_samples)
        self.direction = direction
        self.tasks = list(tasks)
        self.total_steps = int(total_steps)
        self.targets = {t: targets[t] for t in self.tasks}
        self.loss_fns: dict[str, LossFn] = {}
        self.valid: dict[str, Tensor] = {}
        overrides = attack_losses or {}
        for t in self.tasks:
            loss_fn, count_fn = resolve_loss(losses[t], t)
            self.loss_fns[t] = overrides.get(t, loss_fn)
            self.valid[t] = _valid_flags(t, self.targets[t], count_fn, valid)
        self.state: Any = None

    def _checked(self, task: str, value: Any, n: int) -> Tensor:
        if not isinstance(value, Tensor) or value.shape != (n,):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"the loss of task {task!r} must return per-sample losses of shape ({n},), got {shape}; "
                "use reduction='none' and average over each sample's pixels"
            )
        return value.float()

    def losses_from(self, preds: Mapping[str, Tensor], step: int | None) -> StepLosses:
        """The attack losses of predictions made at an iterate: what step `step` ascends and what iterates
        are judged by (the same tensors unless a loss is step dependent; `step=None`: judged only)."""
        missing = [t for t in self.tasks if t not in preds]
        if missing:
            raise ValueError(f"the model returned no prediction for {missing} (it returned {sorted(preds)})")
        ascent: dict[str, Tensor] = {}
        judged: dict[str, Tensor] = {}
        for task in self.tasks:
            fn = self.loss_fns[task]
            # Losses, divisions and logs in float32 even when the model runs in reduced precision.
            pred, target = preds[task].float(), self.targets[task]
            n = pred.shape[0]
            if getattr(fn, "step_aware", False) and step is None:
                ascent[task] = judged[task] = self._checked(task, fn.judge(pred, target), n)
            elif getattr(fn, "step_aware", False):
                value = fn(pred, target, step=step, total_steps=self.total_steps)
                ascent[task] = self._checked(task, value, n)
                judged[task] = self._checked(task, fn.judge(pred, target), n)
            else:
                ascent[task] = judged[task] = self._checked(task, fn(pred, target), n)
        return StepLosses(ascent, judged)

    def step_losses(self, x: Tensor, step: int | None) -> StepLosses:
        """Forward the tasks the direction needs at x; their losses at step `step`."""
        return self.losses_from(forward_tasks(self.model, x, self.tasks), step)

    def _forward_losses(self, x: Tensor, step: int) -> dict[str, Tensor]:
        """The losses step `step` ascends at x (the LP cross-check reads them)."""
        return self.step_losses(x, step).ascent

    def init_state(self, x_clean: Tensor) -> None:
        """Let a stateful direction read the clean losses (e.g. StaticRelative's weights); the judged
        (step-independent) ones, so the state does not depend on a loss schedule."""
        if not self.direction.needs_init:
            return
        if self.eot_samples == 1:
            with torch.no_grad():
                losses = self.step_losses(x_clean, None).judged
        else:  # a random model's clean losses: their mean over the draws, as every later evaluation
            with torch.no_grad():
                losses = self._mean([self.step_losses(x_clean, None).judged for _ in range(self.eot_samples)])
        self.state = self.direction.init(losses, self.valid)

    def ascent(
        self,
        x_leaf: Tensor,
        losses: Mapping[str, Tensor],
        *,
        retain_graph: bool = False,
        create_graph: bool = False,
    ) -> Tensor:
        """The direction's ascent direction at `x_leaf` from losses computed there (not detached).

        `retain_graph` keeps the forward graph for a later backward (Free AT's weight step shares it);
        `create_graph` makes the result differentiable (GradAlign). Both need a direction whose ascent is
        the gradient of its objective: one that overrides `gradient` runs its own backward passes.
        """
        if not self.direction.gradient_of_objective and (retain_graph or create_graph):
            raise ValueError(
                f"direction {self.direction.spec()!r} computes its own gradient, which cannot keep or "
                "differentiate the forward graph"
            )
        grad = self.direction.gradient(x_leaf, losses, self.valid, self.state)
        if grad is None:
            objective = self.direction.objective(losses, self.valid, self.state)
            if objective.requires_grad:
                (grad,) = torch.autograd.grad(
                    objective.sum(),
                    x_leaf,
                    allow_unused=True,
                    retain_graph=retain_graph or create_graph,
                    create_graph=create_graph,
                )
            if grad is None:  # objective does not depend on x (e.g. no valid pixel anywhere)
                grad = torch.zeros_like(x_leaf)
        return grad

    def __call__(self, x: Tensor, step: int, need_grad: bool = True) -> Evaluation:
        if self.eot_samples == 1:
            return self._evaluate(x, step, need_grad)
        return self._expectation(x, step, need_grad)

    def _expectation(self, x: Tensor, step: int, need_grad: bool) -> Evaluation:
        """EOT (docs/adaptive_attacks.md): the mean over `eot_samples` forward(/backward) passes of a model
        that is random at evaluation time. Per draw the direction weights its losses as it always does;
        what is averaged is the direction's `expectation_terms` (its ascent direction, or the per-task
        gradients a direction with its own step consumes), then `from_expectation` makes the step. The
        objective and task losses iterates are judged by are the means of the draws."""
        objectives, task_losses, terms = [], [], []
        for _ in range(self.eot_samples):
            if not need_grad:
                ev = self._evaluate(x, step, need_grad=False)
                objectives.append(ev.objective)
                task_losses.append(ev.task_losses)
                continue
            with torch.enable_grad():
                x_leaf = x.detach().requires_grad_(True)
                losses = self.step_losses(x_leaf, step)
                with torch.no_grad():
                    objectives.append(self.direction.objective(losses.judged, self.valid, self.state).float())
                task_losses.append({t: v.detach() for t, v in losses.judged.items()})
                draw = self.direction.expectation_terms(x_leaf, losses.ascent, self.valid, self.state)
                if draw is None:
                    draw = self.ascent(x_leaf, losses.ascent)
                terms.append(draw.detach())
        k = float(self.eot_samples)
        grad = None
        if need_grad:
            mean_terms = torch.stack(terms).sum(dim=0) / k
            grad = self.direction.from_expectation(mean_terms, x, self.valid, self.state).detach()
        return Evaluation(
            (torch.stack(objectives).sum(dim=0) / k).detach(),
            self._mean(task_losses),
            grad,
        )

    def _mean(self, draws: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Per task, the mean of the draws' per-sample losses."""
        return {t: torch.stack([d[t].detach() for d in draws]).sum(dim=0) / len(draws) for t in self.tasks}

    def _evaluate(self, x: Tensor, step: int, need_grad: bool) -> Evaluation:
        """One forward (and backward) pass at x: the objective, the judged losses and the ascent."""
        if not need_grad:
            with torch.no_grad():
                losses = self.step_losses(x, None).judged
                objective = self.direction.objective(losses, self.valid, self.state)
            return Evaluation(objective.detach().float(), {t: v.detach() for t, v in losses.items()}, None)
        with torch.enable_grad():
            x_leaf = x.detach().requires_grad_(True)
            losses = self.step_losses(x_leaf, step)
            with torch.no_grad():
                objective = self.direction.objective(losses.judged, self.valid, self.state)
            grad = self.ascent(x_leaf, losses.ascent)
        return Evaluation(
            objective.detach().float(), {t: v.detach() for t, v in losses.judged.items()}, grad.detach()
        )
