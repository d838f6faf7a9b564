"""Ensembles from plain config mappings (`conf/attack/ensemble.yaml`): members, rules, one budget.

    method: ensemble
    eps: 8/255
    rules: [joint, task]          # "task" expands to task:<t> for every task of the model
    members:
      apgd-dgba: {method: apgd, steps: 100, direction: dgba}
      apgd-single: {method: apgd, steps: 100, direction: single}   # expands to one member per task
      apgd-segpgd: {method: apgd, steps: 100, direction: total, attack_losses: {seg: segpgd}}

Members inherit the ensemble's eps (a member may not set its own). Without the model's tasks
(`tasks=None`) SINGLE members and "task" rules are not expanded yet, but every member is still built, so
an unknown method, direction or parameter fails before anything is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mtl_robust.attacks.base import Attack
from mtl_robust.attacks.ensemble import Ensemble
from mtl_robust.values.budget import parse_budget
from mtl_robust.values.direction import DirectionSpec, expand_per_task, unbound_per_task
from mtl_robust.values.norm import LINF, Norm, NormRefusal

__all__ = ["ENSEMBLE_METHOD", "build_ensemble", "build_member", "member_configs", "rule_list"]

ENSEMBLE_METHOD = "ensemble"
# Builds one member from its config and direction: `attacks.config.attack_from_config`, passed in by the
# config module (the one dispatcher of attack configs), so that this module does not import it back.
MemberBuilder = Callable[[Mapping[str, Any], str], Attack]

# Without the model's tasks a per-task member (SINGLE) is built, and so validated, on this stand-in task.
STAND_IN_TASK = "_"


def member_configs(members: Mapping[str, Any], tasks: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """name -> member config (direction as text); SINGLE expanded per task when tasks are known, else
    built on a stand-in task."""
    if not isinstance(members, Mapping) or not members:
        raise ValueError("attack=ensemble needs at least one member under attack.members")
    out: dict[str, dict[str, Any]] = {}
    for name, cfg in members.items():
        if not isinstance(cfg, Mapping) or "method" not in cfg:
            raise ValueError(
                f"ensemble member {name!r} needs a method (fgsm, pgd, mim, apgd, square), got {cfg!r}"
            )
        cfg = {k: v for k, v in dict(cfg).items() if v is not None}
        if "eps" in cfg or "pixel_eps" in cfg:
            raise ValueError(f"ensemble member {name!r} sets its own eps; members share attack.eps")
        if cfg["method"] == ENSEMBLE_METHOD:
            raise ValueError(f"ensemble member {name!r} is itself an ensemble")
        direction = str(cfg.pop("direction", "total"))
        if unbound_per_task(direction) and tasks is not None:
            for spec in expand_per_task([direction], tasks):
                out[f"{name}:{spec.task}"] = {**cfg, "direction": str(spec)}
        elif unbound_per_task(direction):
            out[name] = {**cfg, "direction": str(DirectionSpec(direction.strip(), STAND_IN_TASK))}
        else:
            out[str(name)] = {**cfg, "direction": direction}
    return out


def rule_list(rules: Sequence[str], tasks: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for rule in rules or ["joint"]:
        if rule == "task":
            if tasks is not None:
                out.extend(f"task:{t}" for t in tasks)
        else:
            out.append(str(rule))
    return out


def build_member(
    name: str, cfg: Mapping[str, Any], eps: float, build: MemberBuilder, norm: Norm = LINF
) -> Attack:
    cfg = dict(cfg)
    direction = cfg.pop("direction")
    try:
        return build({**cfg, "eps": eps, "norm": str(norm)}, direction)
    except NormRefusal:
        raise
    except (ValueError, TypeError) as err:
        raise ValueError(f"ensemble member {name!r}: {err}") from err


def build_ensemble(attack: Mapping[str, Any], tasks: Sequence[str] | None, build: MemberBuilder) -> Ensemble:
    """Build (and so validate) an ensemble; with `tasks` also check its rules and members against them."""
    if attack.get("method") != ENSEMBLE_METHOD:
        raise ValueError(f"not an ensemble config: method {attack.get('method')!r}")
    if "eps" not in attack:
        raise ValueError("the ensemble needs eps, e.g. attack.eps=8/255")
    eps = parse_budget(attack["eps"], "eps")
    norm = Norm.parse(attack.get("norm"))
    configs = member_configs(attack.get("members") or {}, tasks)
    members = {}
    for name, cfg in configs.items():
        try:
            members[name] = build_member(name, cfg, eps, build, norm)
        except NormRefusal as err:
            # One preset serves every norm: under L2/L1 the members that have no such attack (Square
            # under L1) are left out, and the row's member_names say which ran.
            if norm.is_default:
                raise ValueError(f"ensemble member {name!r}: {err}") from err
    if not members:
        raise ValueError(f"no ensemble member can attack under attack.norm={norm}")
    ensemble = Ensemble(members, rule_list(list(attack.get("rules") or ["joint"]), tasks))
    if tasks is not None:
        ensemble.check_tasks(tasks)
    return ensemble
