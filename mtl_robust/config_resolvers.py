"""OmegaConf resolvers the shipped configs use; registered when `mtl_robust` is imported.

`${budget_default:${.pixel_eps},8/255}` is the attack groups' default `eps`: the default budget unless the
user gave `pixel_eps` instead. So `attack.eps=4/255` and `attack.pixel_eps=4` both work on their own, and
giving both is the one case left for the attack config to reject.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def budget_default(other: Any, default: Any) -> Any:
    """`default`, or None when the budget was given in the other unit (`other` set)."""
    return None if other is not None else default


def register() -> None:
    if not OmegaConf.has_resolver("budget_default"):
        OmegaConf.register_new_resolver("budget_default", budget_default)
