"""Forward+backward passes per image: of an attack cell and of a training. The unit is one forward and one
input- or weight-gradient backward of the model on one image; estimates, not measurements."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Multi-backward directions: one backward per task after one forward. A backward costs about twice a
# forward, so T backwards after one forward cost (1 + 2T) / 3 passes.
PER_TASK_BACKWARD = ("minmax", "dgba_reference")
# Directions that read a state from one clean forward before the attack (`Direction.needs_init`).
CLEAN_STATE_DIRECTIONS = ("minmax", "static_relative")
# An evaluation forward (metrics of x_adv), in passes.
FORWARD = 1 / 3
# Images per split of data sets whose size the config does not state (the standard splits).
KNOWN_SPLIT_SIZES = {"nyuv2": {"train": 795, "val": 654, "test": 654}}


def direction_factor(direction: str, n_tasks: int) -> float:
    name = str(direction).split(":")[0]
    return (1 + 2 * n_tasks) / 3 if name in PER_TASK_BACKWARD else 1.0


def attack_steps(attack: Mapping[str, Any]) -> int:
    """Gradient steps of one run of a method (restarts included), each EOT sample counted (`eot_samples`
    forward+backward passes per step)."""
    eot = int(attack.get("eot_samples", 1) or 1)
    method = attack.get("method")
    if method == "fgsm":
        return eot
    steps = int(attack.get("steps", 10))
    return steps * int(attack.get("n_restarts", 1) or 1) * eot


def cell_passes(attack: Mapping[str, Any], direction: str, n_tasks: int) -> float:
    """Passes per image of one cell: every step of the attack (and of each ensemble member), plus the
    forwards that score the result."""
    if attack.get("method") == "ensemble":
        members = attack.get("members") or {}
        inner = sum(
            cell_passes(m, str(m.get("direction", "total")), n_tasks) * _copies(m, n_tasks)
            for m in members.values()
        )
        return inner + FORWARD * len(attack.get("rules") or [])
    if attack.get("method") == "square":
        return FORWARD * square_queries(attack, direction) + FORWARD
    return attack_steps(attack) * direction_factor(direction, n_tasks) + FORWARD


def square_queries(attack: Mapping[str, Any], direction: str) -> int:
    """Forwards per image of one Square run: its queries per restart, plus the clean forward of a direction
    that reads its state there, each `eot_samples` times (as `Square.queries_per_image` counts them)."""
    restarts = int(attack.get("n_restarts", 1) or 1)
    reads_clean = str(direction).split(":")[0] in CLEAN_STATE_DIRECTIONS
    eot = int(attack.get("eot_samples", 1) or 1)
    return (restarts * int(attack.get("queries", 5000)) + int(reads_clean)) * eot


def _copies(member: Mapping[str, Any], n_tasks: int) -> int:
    """An ensemble member whose direction is SINGLE without a task runs once per task."""
    direction = member.get("direction", "total")
    if isinstance(direction, Mapping):
        name, task = direction.get("name"), direction.get("task")
    else:
        name, _, task = str(direction).partition(":")
    return n_tasks if name == "single" and not task else 1


def training_steps(cfg: DictConfig) -> int:
    """Optimiser-loop iterations of the training (each carries the loop's fixed cost)."""
    return _epochs_and_steps(cfg)[1]


def split_size(cfg: DictConfig, split: str) -> int:
    """Images in `split` of the configured data (its `num_images`, else the data set's standard size)."""
    splits = cfg.data.get("splits") or {}
    entry = splits.get(split) or {}
    if entry.get("num_images"):
        return int(entry["num_images"])
    known = KNOWN_SPLIT_SIZES.get(str(cfg.data.get("name")), {})
    if split not in known:
        raise ValueError(f"the planner does not know how many images {cfg.data.get('name')}/{split} has")
    return known[split]


def training_passes(cfg: DictConfig) -> float:
    """Passes per training image over the whole training: epochs (or max_steps) times the passes of one
    training step (1 clean; a defense adds its attack's steps on the batch)."""
    per_step = 1.0
    defense = OmegaConf.to_container(cfg.defense, resolve=True) if cfg.get("defense") else {}
    if defense and defense.get("name") not in (None, "none"):
        attack = defense.get("attack") or {}
        if attack.get("method") == "square":  # forwards only, no gradient steps
            direction = defense.get("direction") or "total"
            name = direction.get("name") if isinstance(direction, Mapping) else direction
            per_step += FORWARD * square_queries(attack, str(name))
        else:
            per_step += attack_steps(attack) if attack else 1
    n_train = split_size(cfg, "train")
    batch = int(cfg.data.batch_size)
    max_steps = int(cfg.train.get("max_steps", -1) or -1)
    steps = max_steps if max_steps > 0 else int(cfg.train.max_epochs) * math.ceil(n_train / batch)
    return steps * batch * per_step


def _epochs_and_steps(cfg: DictConfig) -> tuple[float, int]:
    n_train = split_size(cfg, "train")
    batch = int(cfg.data.batch_size)
    per_epoch = math.ceil(n_train / batch)
    max_steps = int(cfg.train.get("max_steps", -1) or -1)
    if max_steps > 0:
        return max_steps / per_epoch, max_steps
    return float(cfg.train.max_epochs), int(cfg.train.max_epochs) * per_epoch


def validation_passes(cfg: DictConfig) -> float:
    """Passes (in images x passes) of the validation forwards around a training: the sanity check, every
    `check_val_every_n_epoch`-th epoch and the final validation the train job prints."""
    n_val = split_size(cfg, "val")
    batch = int(cfg.data.get("eval_batch_size") or cfg.data.batch_size)
    epochs, _ = _epochs_and_steps(cfg)
    every = int((cfg.get("trainer") or {}).get("check_val_every_n_epoch") or 1)
    sanity = min(n_val, int((cfg.get("trainer") or {}).get("num_sanity_val_steps", 2) or 0) * batch)
    return FORWARD * (sanity + n_val * (math.floor(epochs / every) + 1))


def co_watch_passes(cfg: DictConfig) -> float:
    """The catastrophic-overfitting watch's FGSM and PGD probes on its fixed batch during training."""
    watch = ((cfg.get("callbacks") or {}).get("co_watch")) or {}
    if not watch or not watch.get("enabled", True) or not watch.get("every_n_steps"):
        return 0.0
    _, steps = _epochs_and_steps(cfg)
    checks = max(1, steps // int(watch.every_n_steps))
    per_image = 1 + int(watch.get("pgd_steps", 10)) + 3 * FORWARD  # FGSM, PGD, clean and both scored
    return checks * int(watch.get("num_images", 16)) * per_image


def diagnostics_passes(cfg: DictConfig, n_tasks: int, eval_batch: int) -> float:
    """The gradient-masking checks on `max_batches` batches: PGD at eps and 2 eps, APGD at eps, with 4x
    the steps, at eps = 1 and its best-iterate re-check (9x the steps), a backward per task, noise, scores."""
    diag = cfg.get("diagnostics") or {}
    if not diag.get("enabled", False):
        return 0.0
    images = int(diag.get("max_batches", 1) or 1) * eval_batch
    steps = int(diag.get("steps", 10))
    return images * (9 * steps + n_tasks + 8 * FORWARD)
