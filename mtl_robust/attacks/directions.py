"""Multi-task attack directions (the second attack axis): per-task, per-sample losses -> one ascent direction.

A direction maps the per-task per-sample losses `L[t]: Tensor[N]` (float32) and validity flags
`valid[t]: Bool[N]` (False for a sample with no valid pixel for task t) to a per-sample objective
`f: Tensor[N]`. Its input gradient is the ascent direction and `step` turns that into the unit-box step
every consumer takes (the sign, by default), and `f` itself is what APGD tracks its best iterate by. A
direction whose step is not the gradient of one objective (SignSum) overrides `gradient`. Consumers reach a
direction only through `mtl_robust.attacks.objective.MultiTaskObjective` (state, objective, gradient) and
`step`, so an override works in every attack, ensemble member and fast-AT variant.

Directions are stateless and reusable; per-call state (e.g. the clean-loss weights of StaticRelative)
is returned by `init` and handed back to `objective`.

Guards (docs/method.md *Guards*): losses, divisions and logs are computed in float32; (sample, task)
pairs without valid pixels contribute exactly 0 (never 0/0); loss values are floored at `tau` before log or
division.

One registry: every direction class is decorated with `@register_direction(...)`, which puts it into
`DIRECTIONS` under its `name`, and `build_direction` builds any of them from its text or config form
(`mtl_robust.values.direction.DirectionSpec`), e.g. "dgba", "dgba:1e-06", "single:seg". A direction's
argument (DGBA's `tau`, SINGLE's `task`) is the constructor argument its style's `arg_key` names.

Styles (label, colour, order in reports, `arg_key`): the built-in directions' styles are declared in
`mtl_robust.values.direction`, because the report reads them without importing torch (and so without this
module); their classes register with no style. A new direction passes its own `DirectionStyle` to
`register_direction`, or none for a plain one (its name as label, a palette colour, no argument). A
direction defined outside this package is found through its config's `module:` key, which
`mtl_robust.attacks.config` imports before the name is looked up.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

# DEFAULT_TAU: the floor of the per-sample loss inside log / division. Below it DGBA's term log(max(L, tau))
# is constant, so a (sample, task) pair that is already near-perfect stops steering the direction instead of
# dominating it. Defined with the direction values (a spec leaves the default out), re-exported here.
from mtl_robust.attacks.norms import steepest
from mtl_robust.values.direction import (
    DEFAULT_TAU,
    DirectionSpec,
    DirectionStyle,
    register_style,
    registered,
    style_of,
)
from mtl_robust.values.norm import LINF, Norm, NormRefusal

Losses = Mapping[str, Tensor]
Valid = Mapping[str, Tensor]


def _masked(value: Tensor, valid: Tensor) -> Tensor:
    return torch.where(valid, value, torch.zeros_like(value))


class Direction:
    """Base class. Subclasses implement `objective`; `gradient` may return a direction directly."""

    name: ClassVar[str] = "direction"
    needs_init: ClassVar[bool] = False
    # One backward per task after one forward for each gradient (the planner's cost), instead of one.
    backward_per_task: ClassVar[bool] = False
    # Whether `gradient` already returns the solved step in the unit step set of the direction's norm
    # (MINMAX: its LP/QP/game's maximiser), so that methods take it as it is instead of re-deriving a step
    # (APGD-L1 would otherwise re-sparsify it at its own adaptive share).
    solves_step: ClassVar[bool] = False
    # The target set (docs/attacker_goals.md): the tasks a joint direction is computed over; None: all. The
    # losses of the other tasks are never computed during the attack, so the direction over {a, b} is the
    # direction of a model with only a and b; every task is still evaluated on the adversarial image.
    targets: tuple[str, ...] | None = None

    def restricted_to(self, targets: Sequence[str] | None) -> Direction:
        """This direction over a target set (None: all tasks); returns self."""
        self.targets = None if targets is None else tuple(targets)
        return self

    def backwards_per_gradient(self, n_tasks: int) -> int:
        """Backward passes one ascent direction costs on a model with `n_tasks` tasks (the planner's count):
        one, or one per task it reads (`backward_per_task`; its target set's size when it has one)."""
        if not self.backward_per_task:
            return 1
        return len(self.targets) if self.targets is not None else n_tasks

    def tasks_needed(self, all_tasks: Sequence[str]) -> list[str]:
        """Tasks whose losses (and so whose forward branches) the direction needs: its target set, in the
        model's task order, or all tasks."""
        if self.targets is None:
            return list(all_tasks)
        unknown = [t for t in self.targets if t not in all_tasks]
        if unknown:
            raise ValueError(
                f"direction {self.spec()!r}: unknown target task(s) {unknown}; "
                f"known tasks are {list(all_tasks)}"
            )
        return [t for t in all_tasks if t in self.targets]

    def init(self, clean_losses: Losses, valid: Valid) -> Any:
        """Per-call state from the losses at the clean input (only called when `needs_init`)."""
        return None

    def objective(self, losses: Losses, valid: Valid, state: Any) -> Tensor:
        raise NotImplementedError

    def gradient(self, x: Tensor, losses: Losses, valid: Valid, state: Any) -> Tensor | None:
        """Return a direction (shape of x) directly, or None to use the input gradient of `objective`."""
        return None

    def expectation_terms(self, x: Tensor, losses: Losses, valid: Valid, state: Any) -> Tensor | None:
        """What EOT averages over random draws of the model (`eot_samples`), from one draw's losses at x.

        None (the default): the ascent direction itself, which is linear in the draws for every direction
        whose step is the gradient of its objective. A direction whose step is a nonlinear function of
        per-task gradients (SignSum's vote, MinMax's LP) returns those per-task gradients, weighted as it
        weights them, so that the nonlinearity is applied once, to their mean (`from_expectation`).
        """
        return None

    def from_expectation(self, terms: Tensor, x: Tensor, valid: Valid, state: Any) -> Tensor:
        """The ascent direction from the mean of `expectation_terms` over the draws."""
        return terms

    @property
    def gradient_of_objective(self) -> bool:
        """True when the ascent direction is the input gradient of `objective` (`gradient` not overridden):
        then it can share a forward graph with a later backward and be differentiated (GradAlign)."""
        return type(self).gradient is Direction.gradient

    def step(self, grad: Tensor, norm: Norm = LINF) -> Tensor:
        """The unit-ball step methods take from a direction: the steepest ascent of its gradient under the
        threat model (the sign under L-inf, g / ||g||_2 under L2, the top coordinates under L1;
        `mtl_robust.attacks.norms.steepest`). MinMax's exact step is already a step and is used as it is."""
        return steepest(grad, norm)

    def for_norm(self, norm: Norm) -> Direction:
        """This direction as an attack under `norm` uses it: itself for a direction whose ascent does not
        depend on the norm (the norm enters only through `step`); a direction that solves its own step
        (MinMax) returns a copy that solves it in that norm, and one that has no meaning there refuses."""
        return self

    def within(self, eps: float) -> Direction:
        """This direction as an attack of radius `eps` uses it: itself, for every direction whose ascent does
        not depend on the radius; STEALTH poses its budget over the attack's ball."""
        return self

    def spec(self) -> str:
        """The text form `build_direction` rebuilds this direction from, its argument included ("dgba",
        "dgba:1e-06", "single:seg"); an argument at its default is left out."""
        key = style_of(self.name).arg_key
        config = {"name": self.name, key: getattr(self, key)} if key else {"name": self.name}
        return str(DirectionSpec.from_config({**config, "tasks": self.targets}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


DIRECTIONS: dict[str, type[Direction]] = {}

D = TypeVar("D", bound=type[Direction])

# The look of a direction registered without a style: its name as label, a palette colour, no argument.
PLAIN_STYLE = DirectionStyle("{name}", None, 3)


def register_direction(style: DirectionStyle | None = None) -> Callable[[D], D]:
    """Class decorator: make a `Direction` subclass buildable by its `name` and known to reports.

    `style` goes to the values registry (`register_style`): how the direction reads in tables and figures
    and, through `arg_key`, which constructor argument its text form carries (`toy:0.5` -> `Toy(scale=0.5)`
    for `arg_key="scale"`; the instance keeps it as the attribute of that name, which `spec` reads). Without
    one, a name the values registry already knows (the built-ins, declared there so that torch-free reports
    know them) keeps its style, and a new name gets `PLAIN_STYLE`.

    Example::

        @register_direction(DirectionStyle("TOY", "tab:green", 4))
        class Toy(Direction):
            name = "toy"
            def objective(self, losses, valid, state):
                return sum(losses[t] for t in losses)
    """

    def register(cls: D) -> D:
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not name or ":" in name:
            raise TypeError(f"{cls.__name__} needs its own `name` (a word without ':') to be registered")
        known = DIRECTIONS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"direction name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        if style is not None:
            register_style(name, style)
        elif name not in registered():
            register_style(name, PLAIN_STYLE)
        key = style_of(name).arg_key
        if key is not None and key not in inspect.signature(cls).parameters:
            raise TypeError(f"{cls.__name__}: its style's arg_key {key!r} is no argument of its constructor")
        DIRECTIONS[name] = cls
        return cls

    return register


@register_direction()
class Single(Direction):
    """grad L_task only; the model is called with `tasks=[task]`, so only that task's branch runs."""

    name = "single"

    def __init__(self, task: str) -> None:
        if not isinstance(task, str) or not task:
            raise ValueError(f"Single needs a task name, got {task!r}")
        self.task = task

    def tasks_needed(self, all_tasks: Sequence[str]) -> list[str]:
        if self.task not in all_tasks:
            raise ValueError(
                f"single-task direction: unknown task {self.task!r}; known tasks are {list(all_tasks)}"
            )
        return [self.task]

    def objective(self, losses: Losses, valid: Valid, state: Any) -> Tensor:
        return _masked(losses[self.task], valid[self.task])

    def __repr__(self) -> str:
        return f"Single(task={self.task!r})"


@register_direction()
class Total(Direction):
    """grad sum_t L_t (per-sample task losses summed with equal weights)."""

    name = "total"

    def objective(self, losses: Losses, valid: Valid, state: Any) -> Tensor:
        return sum(_masked(losses[t], valid[t]) for t in losses)


@register_direction()
class DGBA(Direction):
    """Dynamic gradient balancing: f = sum_t log(max(L_t, tau)) per sample.

    One backward pass of f gives, per sample, sum_t grad L_t / L_t with weights taken at the current iterate
    (docs/method.md *One backward pass*), i.e. exactly the paper's direction at the cost of TOTAL.
    Requires samples to be independent in the forward pass, which eval mode (BatchNorm on running
    statistics) guarantees.
    """

    name = "dgba"

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def objective(self, losses: Losses, valid: Valid, state: Any) -> Tensor:
        return sum(_masked(losses[t].float().clamp_min(self.tau).log(), valid[t]) for t in losses)

    def __repr__(self) -> str:
        return f"DGBA(tau={self.tau:g})"


def dgba_reference_gradient(x: Tensor, losses: Losses, valid: Valid, tau: float = DEFAULT_TAU) -> Tensor:
    """DGBA computed the way the paper code does (docs/method.md), for tests and benchmarks.

    Per task: backward of the batch-mean loss (graph retained), divide each sample's input gradient by that
    sample's loss, sum over tasks. Costs one backward per task. Equals (1/N) times the input gradient of
    `DGBA().objective` wherever every loss exceeds `tau`. Only deviation from the paper code: the same guards
    as DGBA (loss floored at tau, invalid pairs weighted 0).
    """
    direction = torch.zeros_like(x)
    tasks = list(losses)
    for i, task in enumerate(tasks):
        loss = losses[task].float()
        if not loss.requires_grad:
            continue
        (grad,) = torch.autograd.grad(loss.mean(), x, retain_graph=i < len(tasks) - 1, allow_unused=True)
        if grad is None:
            continue
        weight = _masked(1.0 / loss.detach().clamp_min(tau), valid[task])
        direction = direction + grad * weight.view(-1, *([1] * (x.dim() - 1)))
    return direction


@register_direction()
class DGBAReference(DGBA):
    """DGBA with the paper code's per-task backward passes (slow reference; same objective as DGBA)."""

    name = "dgba_reference"
    backward_per_task = True

    def gradient(self, x: Tensor, losses: Losses, valid: Valid, state: Any) -> Tensor | None:
        return dgba_reference_gradient(x, losses, valid, self.tau)

    def __repr__(self) -> str:
        return f"DGBAReference(tau={self.tau:g})"


@register_direction()
class SignSum(Direction):
    """Per-coordinate majority vote sum_t sign(grad L_t) (per-sample losses); ties give 0.

    Needs one backward per task. Its tracked objective is sum_t L_t, as in the paper code's APGD.
    """

    name = "sign_sum"
    backward_per_task = True

    def objective(self, losses: Losses, valid: Valid, state: Any) -> Tensor:
        return sum(_masked(losses[t], valid[t]) for t in losses)

    def gradient(self, x: Tensor, losses: Losses, valid: Valid, state: Any) -> Tensor | None:
        return self.from_expectation(self.expectation_terms(x, losses, valid, state), x, valid, state)

    def expectation_terms(self, x: Tensor, losses: Losses, valid: Valid, state: Any) -> Tensor:
        """[T, *x.shape] per-task input gradients (zero for a task without gradient)."""
        grads = []
        tasks = list(losses)
        for i, task in enumerate(tasks):
            loss = _masked(losses[task], valid[task])
            grad = None
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(
                    loss.sum(), x, retain_graph=i < len(tasks) - 1, allow_unused=True
                )
            grads.append(torch.zeros_like(x) if grad is None else grad)
        return torch.stack(grads)

    def for_norm(self, norm: Norm) -> Direction:
        if not norm.is_default:
            raise NormRefusal(
                "direction sign_sum is a per-coordinate vote of gradient signs, a step of the L-inf box "
                "only; "
                f"under attack.norm={norm} use direction=total, dgba or minmax (their steps are exact in "
                "every norm)"
            )
        return self

    def from_expectation(self, terms: Tensor, x: Tensor, valid: Valid, state: Any) -> Tensor:
        votes = torch.zeros_like(x)
        for grad in terms:
            votes = votes + grad.sign()
        return votes


@register_direction()
class StaticRelative(Direction):
    """f = sum_t L_t / max(L_t(x_clean), tau) per sample: relative weights frozen at the clean loss.

    The ablation of DGBA's dynamic weights (taskaugment's RELATIVE_WEIGHT, per sample; docs/method.md).
    """

    name = "static_relative"
    needs_init = True

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def init(self, clean_losses: Losses, valid: Valid) -> dict[str, Tensor]:
        return {
            t: _masked(1.0 / clean_losses[t].detach().float().clamp_min(self.tau), valid[t])
            for t in clean_losses
        }

    def objective(self, losses: Losses, valid: Valid, state: Any) -> Tensor:
        if state is None:
            raise RuntimeError(
                "StaticRelative needs the clean-loss weights from init(); the attack sets them"
            )
        return sum(_masked(losses[t] * state[t], valid[t]) for t in losses)

    def __repr__(self) -> str:
        return f"StaticRelative(tau={self.tau:g})"


def direction_choices() -> list[str]:
    """The registered directions as a user writes them: a required argument shown as `<arg>`."""
    return sorted(
        f"{name}:<{style_of(name).arg_key}>" if style_of(name).arg_required else name for name in DIRECTIONS
    )


def build_direction(spec: str | DirectionSpec | Mapping[str, Any] | Direction, **kwargs: Any) -> Direction:
    """A registered direction from its text form ("total", "dgba:1e-06", "single:seg"), a `DirectionSpec`
    or a direction config (`{name: single, task: seg}`); a Direction instance is returned unchanged.
    `kwargs` go to the constructor over the spec's argument (e.g. tau).
    """
    if isinstance(spec, Direction):
        if kwargs:
            raise ValueError("keyword arguments are only accepted with a direction name, not an instance")
        return spec
    if not isinstance(spec, str | DirectionSpec | Mapping):
        raise TypeError(f"direction must be a name or a Direction, got {type(spec).__name__}")
    parsed = DirectionSpec.parse(spec)
    cls = DIRECTIONS.get(parsed.name)
    if cls is None:
        raise ValueError(f"unknown attack direction {str(parsed)!r}; choose one of {direction_choices()}")
    if parsed.arg is not None and parsed.style.arg_key is None:
        raise ValueError(f"direction {parsed.name!r} takes no argument, got {str(parsed)!r}")
    direction = cls(**{**parsed.kwargs(), **kwargs})
    return direction if parsed.targets is None else direction.restricted_to(parsed.targets)
