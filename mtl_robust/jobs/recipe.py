"""The training parts of a job's config, the one place that says what decides a trained model: the
checkpoint cache key (`pipeline.training_key`) hashes them with the runtime, and the training recipe that
every row of the model carries (`values/recipe.py`) is the same parts with the seed left out."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtl_robust.values.budget import budget_from, format_pixels
from mtl_robust.values.norm import Norm
from mtl_robust.values.recipe import SEED, TrainingRecipe
from mtl_robust.values.training import DEFAULT_MTL

# Defenses take their attack and direction from the `attack` and `direction` groups, which add settings
# that mean the same as leaving them out (no pixel budget, no attack seed, no per-task attack losses, no
# task for a direction other than SINGLE). Dropped, so that equal defenses hash equal whichever way they
# were written, and the checkpoints cached when adv_train wrote its attack inline are still found.
_UNSET_ATTACK_FIELDS: dict[str, Any] = {
    "pixel_eps": None,
    "seed": None,
    "attack_losses": {},
    "task": None,
    "eot_samples": 1,
    "surrogate": None,
    "norm": None,  # the threat model at its default (L-inf)
}


def training_parts(cfg: DictConfig) -> dict[str, Any]:
    """data, model, train, defense (normalised), seed, the trainer's length and precision, the multi-task
    method unless `ew` and the overfitting watch when enabled (only then, so the keys of existing cached
    checkpoints stay)."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "model", "train", "defense")}
    if parts["defense"].get("name", "none") == "none":
        # A study that sets its adversarial training's settings (defense.attack.steps=2, ...) leaves them
        # in its clean models' defense too, where they train nothing: one clean model whatever they say.
        parts["defense"] = {"name": "none"}
    for part in ("attack", "direction"):
        if isinstance(parts["defense"].get(part), dict):
            given = parts["defense"][part].items()
            parts["defense"][part] = {
                k: v for k, v in given if k not in _UNSET_ATTACK_FIELDS or v != _UNSET_ATTACK_FIELDS[k]
            }
    mtl = cfg.get("mtl")
    if mtl and mtl.get("name", DEFAULT_MTL) != DEFAULT_MTL:  # only then: `ew` keys are those of before it
        parts["mtl"] = OmegaConf.to_container(mtl, resolve=True)
    parts["seed"] = cfg.seed
    parts["trainer"] = {k: cfg.trainer.get(k) for k in ("max_epochs", "max_steps", "precision")}
    watch = (cfg.get("callbacks") or {}).get("co_watch")
    if watch:
        parts["co_watch"] = OmegaConf.to_container(watch, resolve=True)
    return parts


def training_recipe(cfg: DictConfig) -> TrainingRecipe:
    """The recipe of the model this config trains: its training parts with the seed replaced by `SEED`
    wherever it appears (the run seed and every setting interpolated from it)."""
    seedless = cfg.copy()
    with_flag = OmegaConf.is_struct(seedless)
    OmegaConf.set_struct(seedless, False)
    seedless.seed = SEED
    OmegaConf.set_struct(seedless, with_flag)
    parts = training_parts(seedless)
    del parts["seed"]
    attack = parts["defense"].get("attack")
    if isinstance(attack, dict) and ("eps" in attack or "pixel_eps" in attack):
        # One budget, however it was written (8/255, 0.0314, pixel_eps=8): one recipe. An L2/L1 radius is
        # range-checked and written under its own norm (0.5, not 127.5/255; a radius may exceed 1).
        norm = Norm.parse(attack.get("norm"))
        eps = budget_from(attack.pop("eps", None), attack.pop("pixel_eps", None), norm.max_radius)
        attack["eps"] = format_pixels(eps, norm=norm)
    return TrainingRecipe.from_parts(parts)
