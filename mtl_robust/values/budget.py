"""The attack budget: one value, eps on the [0, 1] pixel scale of the images, whatever the norm.

Users write it as a float (`0.0314`), as a fraction of the 8-bit pixel step (`"8/255"`, the paper's
eps = 8), or in 0-255 units (`pixel_eps: 8`). Stores keep the float. Printed (`format_eps`, the one
formatter of tables, figures, terminal lines and wandb): an L-inf budget in pixel steps, `8/255`; an L2 or
L1 radius as the plain decimal it is written in (`0.75`), since it is no count of pixel steps (0.75 would
read 191/255). Where the norm is shown is the caller's: next to the method, as the tables do (`PGD[L2]`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from mtl_robust.values.norm import Norm

# One 8-bit pixel step is 1/255 of the [0, 1] image range.
PIXEL_STEPS = 255

# What to type: budgets reach an attack from the command line as one of these two overrides.
EPS_HINT = "type attack.eps=8/255 (pixel scale [0, 1]) or attack.pixel_eps=8 (0-255 units)"


def parse_budget(value: Any, name: str = "eps") -> float:
    """A float, an int, or a fraction string such as "8/255" -> float (no range check)."""
    hint = f"; {EPS_HINT}" if "eps" in name else ""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number or a fraction like '8/255', got {value!r}{hint}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            # "0.5/255" too (what `format_eps` writes for budgets between pixel steps), not only "8/255"
            numerator, _, denominator = value.replace(" ", "").partition("/")
            return float(Fraction(numerator) / Fraction(denominator or 1))
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(
                f"{name} must be a number or a fraction like '8/255', got {value!r}{hint}"
            ) from err
    raise ValueError(f"{name} must be a number or a fraction like '8/255', got {value!r}{hint}")


def check_eps(eps: float, name: str = "eps", upper: float | None = 1.0) -> float:
    """`eps` itself when it is a budget on the [0, 1] pixel scale; a clear error otherwise. `upper`: the
    largest budget (1 for L-inf; None for the L2/L1 radii, which grow with the image: values.norm)."""
    if upper is None:
        if not math.isfinite(eps) or eps < 0.0:
            raise ValueError(f"{name} must be a finite number >= 0 on the [0, 1] pixel scale, got {eps:g}")
        return eps
    if not math.isfinite(eps) or not 0.0 <= eps <= upper:
        raise ValueError(
            f"{name} must lie in [0, 1] (the pixel scale of [0, 1] images), got {eps:g}; {EPS_HINT}"
        )
    return eps


def parse_eps(value: Any, name: str = "eps") -> float:
    """`"8/255"` -> 8/255, `"0.03"` -> 0.03, checked to lie in [0, 1]."""
    return check_eps(parse_budget(value, name), name)


def budget_from(eps: Any = None, pixel_eps: Any = None, upper: float | None = 1.0) -> float:
    """The budget from a config that gives `eps` ([0, 1] scale) or `pixel_eps` (0-255 units), not both;
    `upper` as in `check_eps`."""
    if pixel_eps is not None:
        if eps is not None:
            raise ValueError(
                f"the attack budget is given twice (eps={eps!r} and pixel_eps={pixel_eps!r}); "
                f"give one: {EPS_HINT}"
            )
        return check_eps(from_pixels(parse_budget(pixel_eps, "pixel_eps")), "eps", upper)
    if eps is None:
        raise ValueError(f"the attack config needs a budget: {EPS_HINT}")
    return check_eps(parse_budget(eps, "eps"), "eps", upper)


def from_pixels(pixels: float) -> float:
    """0-255 units -> [0, 1] scale: from_pixels(8) == 8/255 (any number or numeric string -> a float)."""
    return float(pixels) / PIXEL_STEPS


def to_pixels(eps: float) -> float:
    """[0, 1] scale -> 0-255 units: to_pixels(8/255) == 8.0 (up to rounding)."""
    return eps * PIXEL_STEPS


def pixel_key(eps: float) -> float:
    """The budget in pixel units rounded so that 8/255 written two ways groups as one (a grouping key)."""
    return round(to_pixels(eps), 4)


def same_eps(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _is_box(norm: Norm | str | None) -> bool:
    """Whether a budget of `norm` (a Norm, its text, or None = L-inf) counts pixel steps; a norm no parser
    knows (a hand-edited row) prints as a plain decimal, which misreads nothing."""
    try:
        return Norm.parse(norm).name == "linf"
    except ValueError:
        return False


def format_eps(eps: float, norm: Norm | str | None = None) -> str:
    """The budget as tables print it. L-inf (`norm` None, "linf"): 8/255 -> '8/255', budgets between whole
    pixel steps keep their decimals ('0.5/255'). L2/L1: the radius itself, 0.75 -> '0.75'."""
    if not math.isfinite(eps):
        return "?"
    if not _is_box(norm):
        return f"{eps:.4g}"
    pixels = to_pixels(eps)
    if abs(pixels - round(pixels)) < 1e-4:
        return f"{round(pixels)}/{PIXEL_STEPS}"
    return f"{pixels:.3g}/{PIXEL_STEPS}"


def format_pixels(eps: float, spec: str = "g", norm: Norm | str | None = None) -> str:
    """The budget as its pixel count over 255, the count formatted by `spec`: '8/255' ('g'), '8.0/255'
    ('.1f'). What logs and run names print; `format_eps` rounds to whole steps for tables instead. An L2/L1
    radius prints as itself ('0.75'), as in `format_eps`."""
    if not _is_box(norm):
        return format_eps(eps, norm)
    return f"{to_pixels(eps):{spec}}/{PIXEL_STEPS}"


def eps_axis(eps: float, norm: Norm | str | None = None) -> float:
    """Where a budget sits on a figure's eps axis: pixel steps for L-inf (8/255 at 8), the radius for
    L2/L1 (0.75 at 0.75), so the ticks read as `format_eps` prints."""
    return to_pixels(eps) if _is_box(norm) else eps


def eps_axis_title(norm: Norm | str | None = None) -> str:
    """The title of that axis."""
    if _is_box(norm):
        return "ε (pixel units, /255)"
    try:
        name = Norm.parse(norm).label
    except ValueError:
        name = str(norm)
    return f"ε ({name} radius, [0, 1] pixel scale)"


def eps_slug(eps: float, norm: Norm | str | None = None) -> str:
    """8/255 -> 'eps8'; an L2 radius 0.75 -> 'eps0p75' (for file names, which name the norm elsewhere)."""
    return "eps" + format_eps(eps, norm).split("/")[0].replace(".", "p")
