"""The threat model as a value: which norm bounds a perturbation (`linf`, `l2`, `l1`), parsed and formatted
here only.

Text form (configs, rows, the Python API): `linf` (the default, the paper's box), `l2`, `l1`, and
`l1:<share>` for an L1 step that moves a share of the coordinates other than the default (see
`L1_STEP_SHARE`). Budgets of every norm are on the [0, 1] pixel scale: `eps` bounds the norm of the
perturbation of a [0, 1] image, so an L2 radius of 0.5 means ||delta||_2 <= 0.5 with delta in [0, 1] units
(docs/threat_models.md lists the radii papers use and how a radius scales with the image size).

Keys: the default `linf` stays out of every row and cache key (`Norm.key` is None), so stores written
before norms existed keep their keys; `l2` and `l1` enter them.

Plain Python: reports read it without torch. The geometry (projections, steps) is in
`mtl_robust.attacks.norms`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

NORMS = ("linf", "l2", "l1")
DEFAULT_NORM = "linf"
# The L1 step moves the top `share` of coordinates by |gradient| (auto-attack's APGD-L1 starts from 20 %
# and adapts; see docs/threat_models.md): a pure L1 step (one coordinate) would spend the whole budget on a
# pixel the [0, 1] range clips at once.
L1_STEP_SHARE = 0.2
# What to type when a norm is wrong.
NORM_HINT = "write attack.norm=linf, l2 or l1 (l1:0.05 for an L1 step on 5 % of the pixels)"


class NormRefusal(ValueError):
    """A method or direction that cannot attack under the requested norm (one clear error; an ensemble
    under that norm leaves such members out instead)."""


_ALIASES = {"inf": "linf", "linf": "linf", "l_inf": "linf", "l2": "l2", "l1": "l1"}


@dataclass(frozen=True)
class Norm:
    """A threat model: `name` in NORMS and, for L1, the share of coordinates one step moves."""

    name: str = DEFAULT_NORM
    share: float | None = None  # L1 only; None: L1_STEP_SHARE

    def __post_init__(self) -> None:
        if self.name not in NORMS:
            raise ValueError(f"unknown norm {self.name!r}; {NORM_HINT}")
        if self.share is not None:
            if self.name != "l1":
                raise ValueError(f"only the l1 norm takes a step share, got {self.name}:{self.share}")
            if not (math.isfinite(self.share) and 0.0 < self.share <= 1.0):
                raise ValueError(f"the L1 step share must lie in (0, 1], got {self.share}; {NORM_HINT}")

    @classmethod
    def parse(cls, value: Any) -> Norm:
        """`None`/"linf"/"Linf" -> Norm("linf"); "l2"; "l1"; "l1:0.05"; a Norm is returned as it is."""
        if isinstance(value, Norm):
            return value
        if value is None:
            return cls()
        if not isinstance(value, str):
            raise ValueError(f"a norm is written as text, got {value!r}; {NORM_HINT}")
        name, _, arg = value.strip().lower().partition(":")
        if name not in _ALIASES:
            raise ValueError(f"unknown norm {value!r}; {NORM_HINT}")
        name = _ALIASES[name]
        if not arg:
            return cls(name)
        try:
            share = float(arg)
        except ValueError as err:
            raise ValueError(f"the L1 step share in {value!r} is not a number; {NORM_HINT}") from err
        return cls(name, None if name == "l1" and share == L1_STEP_SHARE else share)

    def __str__(self) -> str:
        return self.name if self.share is None else f"{self.name}:{self.share:g}"

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_NORM

    @property
    def key(self) -> str | None:
        """What rows and cache keys carry: None for L-inf (old keys unchanged), else the text form."""
        return None if self.is_default else str(self)

    @property
    def step_share(self) -> float:
        """The share of coordinates an L1 step moves (1.0 for the other norms, which move all)."""
        if self.name != "l1":
            return 1.0
        return L1_STEP_SHARE if self.share is None else self.share

    @property
    def label(self) -> str:
        """How tables name it: 'L-inf', 'L2', 'L1'."""
        return {"linf": "L-inf", "l2": "L2", "l1": "L1"}[self.name]

    @property
    def max_radius(self) -> float | None:
        """The largest budget that can mean anything without knowing the image size: 1 for L-inf (the pixel
        range); L2 and L1 radii grow with the number of pixels (sqrt(D) and D), so none."""
        return 1.0 if self.name == "linf" else None

    def check_radius(self, eps: float, name: str = "eps") -> float:
        """`eps` when it is a budget of this norm on the [0, 1] pixel scale; a clear error otherwise."""
        eps = float(eps)
        upper = self.max_radius
        if not math.isfinite(eps) or eps < 0.0 or (upper is not None and eps > upper):
            bound = f"[0, {upper:g}]" if upper is not None else "[0, inf)"
            raise ValueError(
                f"{name} of an {self.label} attack must lie in {bound} (the [0, 1] pixel scale), got {eps:g}"
            )
        return eps


def method_label(method: str, norm: Norm | str | None) -> str:
    """How tables and terminal lines name an attack: the method, with its norm unless L-inf ('pgd',
    'pgd[l2]'), so rows of different norms never share a table. A norm no parser knows is kept as written."""
    try:
        norm = Norm.parse(norm)
    except ValueError:
        return f"{method}[{norm}]"
    return method if norm.is_default else f"{method}[{norm}]"


def label_norm(label: str) -> str:
    """The norm of a `method_label` ('pgd[l2]' -> 'l2', 'pgd' -> 'linf'), for code that kept only the
    label: what a budget is printed under (`values.budget.format_eps`)."""
    _, bracket, rest = label.partition("[")
    return rest[:-1] if bracket and rest.endswith("]") else DEFAULT_NORM


LINF = Norm("linf")
L2 = Norm("l2")
L1 = Norm("l1")
