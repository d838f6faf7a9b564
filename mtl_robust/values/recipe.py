"""A trained model's recipe: everything that decides how it was trained except its seed.

Two models are seeds of one training procedure exactly when their recipes are equal, so the report pairs
seeds only within one recipe. The recipe is written into the checkpoint when the model is trained and
copied into every row of that model (`recipe`, the settings as dotted keys, and `recipe_id`, their hash).

A recipe is built from plain dicts (the resolved `data`, `model`, `train`, `defense`, ... config parts),
with the run's seed replaced by `SEED` wherever it was interpolated (e.g. the synthetic training split's
seed), so the seeds of one procedure share it. Fields that say where things are, not what is trained
(`root` folders, loader workers, evaluation batch sizes and splits), are left out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SEED = "<seed>"  # stands for the run's seed inside a recipe
# Dotted keys (or their last part, for `root`) that do not change the trained weights.
UNTRAINED_FIELDS = ("data.num_workers", "data.eval_batch_size", "data.splits.val", "data.splits.test")
PATH_FIELD_NAMES = ("root",)
# Settings that make a model's layout and its defense: the fields a layout or a defense comparison swaps.
LAYOUT_PREFIXES = ("model.layout",)
DEFENSE_PREFIXES = ("defense.",)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _kept(name: str) -> bool:
    if name.split(".")[-1] in PATH_FIELD_NAMES:
        return False
    return not any(name == f or name.startswith(f"{f}.") for f in UNTRAINED_FIELDS)


def _hash(settings: Mapping[str, Any]) -> str:
    canonical = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainingRecipe:
    """The settings (dotted key -> JSON value) that decide a trained model, its seed left out."""

    settings: Mapping[str, Any]

    @classmethod
    def from_parts(cls, parts: Mapping[str, Any]) -> TrainingRecipe:
        """From the resolved config parts, the seed already replaced by `SEED`."""
        return cls({k: v for k, v in flatten(parts).items() if _kept(k)})

    @classmethod
    def from_row(cls, value: Any) -> TrainingRecipe | None:
        """The recipe a row or checkpoint stored; None for those written before recipes existed."""
        if not isinstance(value, Mapping) or not value:
            return None
        return cls(dict(value))

    @property
    def fingerprint(self) -> str:
        """Hash of the settings: equal for the seeds of one procedure, different for any other setting."""
        return _hash(self.settings)

    def without(self, prefixes: Iterable[str]) -> TrainingRecipe:
        """The recipe with the settings under `prefixes` left out (what a comparison lets differ)."""
        prefixes = tuple(prefixes)
        return TrainingRecipe({k: v for k, v in self.settings.items() if not k.startswith(prefixes)})

    def to_row(self) -> dict[str, Any]:
        return dict(self.settings)


def differing_settings(recipes: Sequence[TrainingRecipe]) -> list[str]:
    """Dotted keys whose values differ among the recipes (a key missing in one counts as differing)."""
    names = sorted({k for r in recipes for k in r.settings})
    return [k for k in names if len({json.dumps(r.settings.get(k), default=str) for r in recipes}) > 1]


def format_settings(recipe: TrainingRecipe, names: Sequence[str]) -> str:
    """ "train.max_epochs=2, defense.attack.eps=0.0157" (a missing key as "-")."""
    return ", ".join(f"{k}={_short(recipe.settings.get(k, '-'))}" for k in names)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
