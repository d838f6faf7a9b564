"""Attacks from plain config mappings (what Hydra hands over): the attack config normalised once.

`attack_spec(attack, direction)` turns the raw `attack` and `direction` groups into an `AttackSpec`:
budgets as floats on the [0, 1] pixel scale through `mtl_robust.values.budget` (`eps: 8/255`,
`eps: 0.0314`, or `pixel_eps: 8` in 0-255 units; `alpha` is parsed the same way), the threat model
(`norm: linf|l2|l1`, `mtl_robust.values.norm`; L-inf is left out of the config so keys stay as they were),
the direction as a `DirectionSpec`. Jobs build the spec where they compose the config and then build the
attack and the row's config from it, without normalising again.

A direction defined outside this package is found through its config: `module: my_pkg.my_direction` in
`conf/direction/<name>.yaml` is imported (once; Python caches modules) before the name is looked up, so
its `@register_direction` class is known. A new direction needs only its file and that yaml.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from mtl_robust.attacks.base import Attack
from mtl_robust.attacks.ensemble import Ensemble
from mtl_robust.attacks.ensemble_config import ENSEMBLE_METHOD, build_ensemble
from mtl_robust.attacks.registry import build_attack

# EPS_HINT and parse_budget are re-exported: code outside the attacks reads them here.
from mtl_robust.values.budget import EPS_HINT, budget_from, parse_budget, to_pixels
from mtl_robust.values.direction import DirectionSpec
from mtl_robust.values.norm import Norm
from mtl_robust.values.surrogate import SurrogateSpec

__all__ = [
    "ENSEMBLE_METHOD",
    "EPS_HINT",
    "AttackSpec",
    "attack_from_config",
    "attack_spec",
    "direction_spec",
    "ensemble_from_config",
    "normalized_attack_config",
    "parse_budget",
]

# The direction an ensemble cell's rows carry: its members hold their own directions.
ENSEMBLE_DIRECTION = "ensemble"

DirectionConfig = Mapping[str, Any] | str | DirectionSpec


def direction_spec(direction: DirectionConfig) -> DirectionSpec:
    """A direction config (`{name: single, task: seg}`), text form or spec -> its `DirectionSpec`.

    A config's `module` is imported first, so that the direction it defines is registered (its class in
    `DIRECTIONS`, its style, and so its argument's name) before the spec is read.
    """
    if isinstance(direction, Mapping) and direction.get("module"):
        module = str(direction["module"])
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise ValueError(
                f"direction {direction.get('name')!r}: its module {module!r} cannot be imported ({err}); "
                "is the package installed or on PYTHONPATH?"
            ) from err
    return DirectionSpec.parse(direction)


@dataclass(frozen=True)
class AttackSpec:
    """One attack config, normalised: what its attack is built from and its store rows are keyed by.

    `config` keeps the given settings in their order without None values, with `eps` (and `alpha`) as
    floats on the [0, 1] scale (`pixel_eps` folded into `eps`), `attack_losses` as a dict and `direction`
    as the direction's text form. An ensemble (`method: ensemble`) keeps its config as given: its members
    are normalised when it is built, and its rows come from `evaluation.ensemble_cell`.
    """

    config: Mapping[str, Any]
    direction: DirectionSpec
    # A transfer attack's surrogate (x_adv crafted on it, evaluated on the target); not in `config`: the
    # job puts the surrogate's model id into the row instead (`SURROGATE_FIELDS`).
    surrogate: SurrogateSpec | None = None

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def is_ensemble(self) -> bool:
        return self.config.get("method") == ENSEMBLE_METHOD

    @property
    def eps(self) -> float:
        return parse_budget(self.config["eps"], "eps") if self.is_ensemble else self.config["eps"]

    def row_config(self) -> dict[str, Any]:
        """The `config` fields of this attack's store rows: the normalised config plus `pixel_eps`."""
        if self.is_ensemble:
            raise ValueError("an ensemble's row config depends on the model's tasks: see ensemble_cell")
        config = copy.deepcopy(dict(self.config))
        config["pixel_eps"] = to_pixels(config["eps"])
        return config

    def over(self, tasks: Sequence[str]) -> AttackSpec:
        """This attack on a model with `tasks`: its direction's target set checked against them, and a set
        of all of them dropped, so that `dgba@seg+normal+depth` on a three-task model is `dgba` (its
        text and row key), as a study's expansion writes it."""
        if self.is_ensemble:
            return self
        direction = self.direction.over(tasks)
        if direction == self.direction:
            return self
        return replace(
            self, config=MappingProxyType({**self.config, "direction": str(direction)}), direction=direction
        )

    def build(self, tasks: Sequence[str] | None = None) -> Attack:
        """The attack; for an ensemble its `Ensemble`, with `tasks` expanded to them and checked."""
        if self.is_ensemble:
            return ensemble_from_config(self.config, tasks)  # type: ignore[return-value]
        settings = {k: v for k, v in self.config.items() if k not in ("method", "direction")}
        if not settings["attack_losses"]:
            settings.pop("attack_losses")
        return build_attack(self.method, direction=self.direction, **settings)


def attack_spec(attack: Mapping[str, Any], direction: DirectionConfig) -> AttackSpec:
    """Normalise the `attack` and `direction` configs once; bad budgets and directions fail here."""
    if attack.get("method") == ENSEMBLE_METHOD:
        if attack.get("surrogate") is not None:
            raise ValueError(
                "attack.surrogate applies to one method (fgsm, pgd, mim, apgd), not to an ensemble: its "
                "members would pick their worst case on the surrogate"
            )
        return AttackSpec(MappingProxyType(dict(attack)), DirectionSpec(ENSEMBLE_DIRECTION))
    config = {k: v for k, v in dict(attack).items() if v is not None}
    surrogate = SurrogateSpec.parse(config.pop("surrogate", None))
    # At its default (one pass per gradient) EOT stays out of the config, so rows and keys are unchanged.
    if config.get("eot_samples") == 1 and not isinstance(config["eot_samples"], bool):
        config.pop("eot_samples")
    if "method" not in config:
        raise ValueError(
            f"an attack config needs a method (fgsm, pgd, mim, apgd, apgd_paper, square), got {config}"
        )
    # The threat model: L-inf (the default) stays out of the config, so rows and keys are unchanged.
    norm = Norm.parse(config.pop("norm", None))
    if not norm.is_default:
        config["norm"] = str(norm)
    pixel_eps = config.pop("pixel_eps", None)
    # Written in place when given as eps; a budget given as pixel_eps lands last, as it always has.
    config["eps"] = budget_from(config.get("eps"), pixel_eps, norm.max_radius)
    if "alpha" in config:
        config["alpha"] = parse_budget(config["alpha"], "alpha")
    config["attack_losses"] = dict(config.get("attack_losses") or {})
    spec = direction_spec(direction)
    config["direction"] = str(spec)
    return AttackSpec(MappingProxyType(config), spec, surrogate)


def normalized_attack_config(attack: Mapping[str, Any], direction: DirectionConfig) -> dict[str, Any]:
    """The attack config with budgets as floats and the direction as text (`attack_spec(...).config`)."""
    return dict(attack_spec(attack, direction).config)


def attack_from_config(attack: Mapping[str, Any], direction: DirectionConfig) -> Attack:
    """Build (and so validate) an attack: bad budgets or steps fail here, before any model work.

    An ensemble config (`method: ensemble`) is validated the same way but returns its `Ensemble`.
    """
    return attack_spec(attack, direction).build()


def ensemble_from_config(attack: Mapping[str, Any], tasks: Sequence[str] | None = None) -> Ensemble:
    """Build (and so validate) an ensemble config; with `tasks` its rules and members are checked too."""
    return build_ensemble(attack, tasks, attack_from_config)
