"""Attacks from plain config mappings (what Hydra hands over), with eps written as `8/255` or a float.

Budgets live in [0, 1] pixel space. A config may write `eps: 8/255` (the paper's eps = 8) or `eps: 0.0314`;
`pixel_eps: 8` is the same budget in 0-255 units. `alpha` follows the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from mtl_robust.attacks.base import Attack
from mtl_robust.attacks.registry import build_attack

# What to type: budgets reach the attack from the command line as one of these two overrides.
EPS_HINT = "type attack.eps=8/255 (pixel scale [0, 1]) or attack.pixel_eps=8 (0-255 units)"


def parse_budget(value: Any, name: str = "eps") -> float:
    """A float, an int, or a fraction string such as "8/255" -> float."""
    hint = f"; {EPS_HINT}" if "eps" in name else ""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number or a fraction like '8/255', got {value!r}{hint}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(
                f"{name} must be a number or a fraction like '8/255', got {value!r}{hint}"
            ) from err
    raise ValueError(f"{name} must be a number or a fraction like '8/255', got {value!r}{hint}")


def direction_string(direction: Mapping[str, Any] | str) -> str:
    """`{name: single, task: seg}` -> "single:seg"; `{name: dgba}` -> "dgba"."""
    if isinstance(direction, str):
        return direction
    name = direction.get("name")
    if not name:
        raise ValueError(f"a direction config needs a name, got {dict(direction)}")
    task = direction.get("task")
    if name == "single":
        if not task:
            raise ValueError("direction 'single' needs a task, e.g. direction=single direction.task=seg")
        return f"single:{task}"
    return str(name)


def normalized_attack_config(attack: Mapping[str, Any], direction: Mapping[str, Any] | str) -> dict[str, Any]:
    """The attack config with budgets as floats and the direction as a string: what rows are keyed by."""
    cfg = {k: v for k, v in dict(attack).items() if v is not None}
    if "method" not in cfg:
        raise ValueError(f"an attack config needs a method (fgsm, pgd, mim, apgd, apgd_paper), got {cfg}")
    if "pixel_eps" in cfg:
        if "eps" in cfg:
            raise ValueError(
                f"the attack budget is given twice (eps={cfg['eps']!r} and pixel_eps={cfg['pixel_eps']!r}); "
                f"give one: {EPS_HINT}"
            )
        cfg["eps"] = parse_budget(cfg.pop("pixel_eps"), "pixel_eps") / 255.0
    if "eps" not in cfg:
        raise ValueError(f"the attack config needs a budget: {EPS_HINT}")
    cfg["eps"] = parse_budget(cfg["eps"], "eps")
    if not math.isfinite(cfg["eps"]) or not 0.0 <= cfg["eps"] <= 1.0:
        raise ValueError(
            f"eps must lie in [0, 1] (the pixel scale of [0, 1] images), got {cfg['eps']:g}; {EPS_HINT}"
        )
    if "alpha" in cfg:
        cfg["alpha"] = parse_budget(cfg["alpha"], "alpha")
    cfg["attack_losses"] = dict(cfg.get("attack_losses") or {})
    cfg["direction"] = direction_string(direction)
    return cfg


def attack_from_config(attack: Mapping[str, Any], direction: Mapping[str, Any] | str) -> Attack:
    """Build (and so validate) an attack: bad budgets or steps fail here, before any model work.

    An ensemble config (`method: ensemble`) is validated the same way but returns its `Ensemble`.
    """
    if attack.get("method") == "ensemble":
        from mtl_robust.attacks.ensemble_config import ensemble_from_config

        return ensemble_from_config(attack)  # type: ignore[return-value]
    cfg = normalized_attack_config(attack, direction)
    method = cfg.pop("method")
    if not cfg["attack_losses"]:
        cfg.pop("attack_losses")
    return build_attack(method, **cfg)
