"""Fast adversarial training for multi-task models: FGSM with a random start, N-FGSM and Free AT, each with
any attack direction (TOTAL, DGBA, SINGLE on one task, ...) and an optional GradAlign regulariser. Plain
torch: the Lightning module hands over its model, tasks, loss weights and an `optimizer_step(loss, parts)`
callable (`parts`: the per-task losses and the GradAlign penalty, for a multi-task method that combines the
tasks' gradients itself).

Every variant trains on adversarial examples only (no separate clean step), like its original:

* `fgsm_rs` (Wong, Rice & Kolter 2020): start uniformly in the eps-ball, one step of `alpha` (default
  1.25 eps) along the direction's step (the sign of its ascent direction for all but MINMAX), back onto the
  ball and [0, 1]; one weight step.
* `n_fgsm` (de Jorge et al. 2022): start uniformly in a ball of radius `noise` (default 2 eps), one step of
  `alpha` (default eps), clipped to [0, 1] only: the training perturbation may reach noise + alpha.
* `free_at` (Shafahi et al. 2019): every batch is replayed `replays` times; each replay is one forward and
  one backward at x + delta whose gradient both updates the weights (one optimiser step) and moves delta
  by `alpha` (default eps) along the direction's step, back onto the ball. delta carries over replays and
  batches.
* `grad_align` > 0 (Andriushchenko & Flammarion 2020) adds `grad_align * mean(1 - cos(g(x), g(x + eta)))`
  to the training loss, g the direction's ascent direction and eta uniform in the eps-ball; the second
  gradient is differentiated (a double backward), so the direction must be the gradient of its objective.

The single-step variants craft in eval mode by default (`craft: eval`, like the paper's PGD-AT, and exact
for DGBA's per-sample weights); `craft: train` crafts with the training forward's modes, as the published
methods do, and is named in the defense ("fgsm_rs[craft=train]:total"). Free AT and GradAlign use the
training forward, since their point is to share it. A stateful direction (StaticRelative, MinMax) reads its
clean-loss state in eval mode. Fast AT ascends the training losses; attack losses are refused.
Random starts come from torch's global generator, so the training seed covers them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_robust.attacks.directions import Direction, Total, build_direction
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.objective import MultiTaskObjective
from mtl_robust.values.training import FAST_AT_METHODS, PAPER_EPS, DefenseSpec, FastAT

__all__ = ["FAST_AT_METHODS", "PAPER_EPS", "FastATConfig", "FastAdversarialTraining", "parse_fast_at"]

# The fast-AT settings are a value (values/training.py); the name stays for the code that imports it.
FastATConfig = FastAT


@dataclass(frozen=True)
class LossParts:
    """What the training loss is made of: batch-mean loss per task and the GradAlign penalty (or None)."""

    losses: dict[str, Tensor]
    penalty: Tensor | None = None


# optimizer_step(loss, parts): one weight update; `loss` is sum_t w_t L_t (+ penalty), `parts` its terms.
OptimizerStep = Callable[[Tensor, LossParts], None]


def is_fast_at(defense: Mapping[str, Any] | None) -> bool:
    return bool(defense) and defense.get("name") in FAST_AT_METHODS


def checked(config: FastAT) -> FastAT:
    """The settings, once their direction is known to build (and, for GradAlign, to be differentiable)."""
    built = build_direction(config.direction)
    if config.grad_align > 0 and not built.gradient_of_objective:
        raise ValueError(
            f"defense.grad_align > 0 needs a direction whose ascent is the gradient of its objective, so "
            f"that GradAlign can differentiate it; {built.spec()!r} computes its own (e.g. a sign vote or "
            "an LP step), which has no second derivative"
        )
    return config


def parse_fast_at(defense: Mapping[str, Any]) -> FastATConfig:
    """Validate a fast-AT defense config: one clear error for a bad name, budget, step or replay count."""
    method = defense.get("name")
    if method not in FAST_AT_METHODS:
        raise ValueError(
            f"unknown fast adversarial training method {method!r}; choose one of {FAST_AT_METHODS}"
        )
    fast = DefenseSpec.from_config(defense).fast
    assert fast is not None
    return checked(fast)


def training_epochs(defense: Mapping[str, Any] | DefenseSpec | None, max_epochs: int | None) -> int | None:
    """Epochs to run so that a defense takes as many optimiser steps as clean training would.

    Free AT takes `replays` optimiser steps per batch, so it runs ceil(max_epochs / replays) epochs (the
    usual practice); the others run max_epochs.
    """
    spec = defense if isinstance(defense, DefenseSpec) else DefenseSpec.from_config(defense)
    if max_epochs is None or max_epochs < 0 or spec.fast is None:
        return max_epochs
    return max(1, math.ceil(max_epochs / spec.fast.replays))


def per_sample_losses(
    model: nn.Module, tasks: Mapping[str, Any], x: Tensor, targets: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    preds = model(x, tasks=list(tasks))
    return {t: task.loss(preds[t], targets[t]) for t, task in tasks.items()}


def weighted_mean_loss(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """The training loss: sum over tasks of weight x batch-mean per-sample loss (as in clean training)."""
    return sum(weights[t] * loss.mean() for t, loss in losses.items())


def uniform_noise(x: Tensor, radius: float) -> Tensor:
    return (2.0 * torch.rand_like(x) - 1.0) * radius


@dataclass
class StepResult:
    losses: dict[str, Tensor]  # batch-mean loss per task at the adversarial input (last replay)
    total: Tensor  # the training loss that was minimised (GradAlign included)


class FastAdversarialTraining:
    """One training iteration of a fast-AT variant on one batch.

    The direction reaches every variant through `MultiTaskObjective` (state, objective, gradient) and
    `Direction.step`, the same objects the attacks use, so e.g. SignSum's vote, MinMax's LP step and
    StaticRelative's clean-loss weights act here as they do in an attack.
    """

    def __init__(self, config: FastATConfig, tasks: Mapping[str, Any], loss_weights: Mapping[str, float]):
        self.config = config
        self.direction: Direction = build_direction(config.direction)
        self.direction.tasks_needed(list(tasks))  # a SINGLE task the model lacks fails here
        self.loss_weights = dict(loss_weights)
        # Free AT takes delta's gradient from the weights' backward when that gradient is TOTAL's (TOTAL
        # itself, equal loss weights). Otherwise one extra input-only backward per replay.
        self.shared_backward = type(self.direction) is Total and len(set(self.loss_weights.values())) <= 1
        self.delta: Tensor | None = None  # Free AT's perturbation, carried over replays and batches

    @property
    def optimizer_steps_per_batch(self) -> int:
        return self.config.replays

    def step(
        self,
        model: nn.Module,
        tasks: Mapping[str, Any],
        x: Tensor,
        targets: Mapping[str, Tensor],
        optimizer_step: OptimizerStep,
    ) -> StepResult:
        objective = self.objective(model, tasks, x, targets)
        if self.config.method == "free_at":
            return self._free_step(model, tasks, x, targets, objective, optimizer_step)
        x_adv = self._single_step_example(objective, x)
        losses = per_sample_losses(model, tasks, x_adv, targets)
        total = weighted_mean_loss(losses, self.loss_weights)
        penalty = self._grad_align_penalty(objective, x) if self.config.grad_align > 0 else None
        if penalty is not None:
            total = total + penalty
        optimizer_step(total, LossParts({t: v.mean() for t, v in losses.items()}, penalty))
        return StepResult({t: v.mean().detach() for t, v in losses.items()}, total.detach())

    def objective(
        self, model: nn.Module, tasks: Mapping[str, Any], x: Tensor, targets: Mapping[str, Tensor]
    ) -> MultiTaskObjective:
        """The direction bound to this batch; a stateful direction reads its state at the clean x, in eval
        mode (no BatchNorm statistics move for it)."""
        needed = self.direction.tasks_needed(list(tasks))
        objective = MultiTaskObjective(model, targets, tasks, self.direction, needed)
        if self.direction.needs_init:
            with eval_mode(model):
                objective.init_state(x.detach())
        return objective

    # ------------------------------------------------------------------------------------ single step
    def single_step_example(
        self, model: nn.Module, tasks: Mapping[str, Any], x: Tensor, targets: Mapping[str, Tensor]
    ) -> Tensor:
        """FGSM-RS / N-FGSM: uniform start of radius `noise`, one step of `alpha` along the direction's
        step, crafted in the configured mode (eval, or the training forward's modes)."""
        return self._single_step_example(self.objective(model, tasks, x, targets), x)

    def _single_step_example(self, objective: MultiTaskObjective, x: Tensor) -> Tensor:
        cfg = self.config
        x = x.detach()
        start = (x + uniform_noise(x, cfg.noise)).clamp(0.0, 1.0)
        with eval_mode(objective.model) if cfg.craft == "eval" else nullcontext():
            grad = objective(start, 0).grad
        assert grad is not None
        x_adv = start + cfg.alpha * self.direction.step(grad)
        if cfg.project:
            x_adv = torch.minimum(torch.maximum(x_adv, x - cfg.eps), x + cfg.eps)
        return x_adv.clamp(0.0, 1.0).detach()

    # ---------------------------------------------------------------------------------------- Free AT
    def _carried_delta(self, x: Tensor) -> Tensor:
        delta = self.delta
        if delta is None or delta.shape != x.shape or delta.device != x.device:
            delta = torch.zeros_like(x)  # first batch, or a last batch of another size
        return (delta.detach().clamp(-self.config.eps, self.config.eps) + x).clamp(0.0, 1.0) - x

    def _free_step(
        self,
        model: nn.Module,
        tasks: Mapping[str, Any],
        x: Tensor,
        targets: Mapping[str, Tensor],
        objective: MultiTaskObjective,
        optimizer_step: OptimizerStep,
    ) -> StepResult:
        cfg = self.config
        x = x.detach()
        delta = self._carried_delta(x)
        for _ in range(cfg.replays):
            delta = delta.detach().requires_grad_(True)
            preds = model(x + delta, tasks=list(tasks))
            losses = {t: task.loss(preds[t], targets[t]) for t, task in tasks.items()}
            total = weighted_mean_loss(losses, self.loss_weights)
            penalty = self._grad_align_penalty(objective, x) if cfg.grad_align > 0 else None
            if penalty is not None:
                total = total + penalty
            parts = LossParts({t: v.mean() for t, v in losses.items()}, penalty)
            if self.shared_backward:
                optimizer_step(total, parts)  # the same backward fills delta.grad
                grad = torch.zeros_like(x) if delta.grad is None else delta.grad
            elif self.direction.gradient_of_objective:
                # From the training forward, before the weights move; the graph stays for their backward.
                grad = objective.ascent(delta, objective.losses_from(preds, 0).ascent, retain_graph=True)
                optimizer_step(total, parts)
            else:
                # A direction with its own backward passes frees the graph they run through, so it gets its
                # own forward (same modes, weights before the step): one extra forward per replay.
                grad = objective(x + delta.detach(), 0).grad
                optimizer_step(total, parts)
            step = cfg.alpha * self.direction.step(grad.detach())
            delta = (delta.detach() + step).clamp(-cfg.eps, cfg.eps)
            delta = (x + delta).clamp(0.0, 1.0) - x
        self.delta = delta.detach()
        return StepResult({t: v.mean().detach() for t, v in losses.items()}, total.detach())

    # -------------------------------------------------------------------------------------- GradAlign
    def grad_align_penalty(
        self, model: nn.Module, tasks: Mapping[str, Any], x: Tensor, targets: Mapping[str, Tensor]
    ) -> Tensor:
        """weight * mean over samples of 1 - cos(g(x), g(x + eta)); only g(x + eta) is differentiated."""
        return self._grad_align_penalty(self.objective(model, tasks, x, targets), x)

    def _grad_align_penalty(self, objective: MultiTaskObjective, x: Tensor) -> Tensor:
        x = x.detach()

        def gradient(point: Tensor, create_graph: bool) -> Tensor:
            point = point.detach().requires_grad_(True)
            with torch.enable_grad():
                losses = objective.step_losses(point, 0).ascent
                return objective.ascent(point, losses, create_graph=create_graph)

        clean = gradient(x, create_graph=False).detach()
        noisy = gradient((x + uniform_noise(x, self.config.eps)).clamp(0.0, 1.0), create_graph=True)
        cos = F.cosine_similarity(clean.flatten(1), noisy.flatten(1), dim=1)
        return self.config.grad_align * (1.0 - cos).mean()
