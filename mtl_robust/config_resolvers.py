"""OmegaConf resolvers the shipped configs use; registered when `mtl_robust` is imported.

`${budget_default:${.pixel_eps},8/255}` is the attack groups' default `eps`: the default budget unless the
user gave `pixel_eps` instead. So `attack.eps=4/255` and `attack.pixel_eps=4` both work on their own, and
giving both is the one case left for the attack config to reject.

`${pid:}` is this process's id: run folders carry it, so two runs started in the same second (two sweeps
launched together) never share a folder and never overwrite each other's checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf


def budget_default(other: Any, default: Any) -> Any:
    """`default`, or None when the budget was given in the other unit (`other` set)."""
    return None if other is not None else default


def process_id() -> int:
    return os.getpid()


def register() -> None:
    if not OmegaConf.has_resolver("budget_default"):
        OmegaConf.register_new_resolver("budget_default", budget_default)
    if not OmegaConf.has_resolver("pid"):
        # Cached, so the launching process's id stays in the config that Hydra hands to sweep workers
        # (Hydra copies the resolver cache for the same reason `${now:}` is cached).
        OmegaConf.register_new_resolver("pid", process_id, use_cache=True)
