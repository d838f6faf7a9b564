"""What a sweep's jobs compute, per image, counted in model forwards, input-gradient backwards and training
steps. The attacks and directions say what one call costs (`Attack.gradients_per_image`,
`forwards_per_image`, `Direction.backwards_per_gradient`), so a new method or direction is counted by
construction; this module only adds what the jobs wrap around them (scoring forwards, validation, probes).
Seconds come from `planning.throughput`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtl_robust.attacks.base import Attack
from mtl_robust.attacks.config import attack_spec
from mtl_robust.mtl.methods import AGGREGATORS
from mtl_robust.values.training import DefenseSpec, TrainingProcedure

# Images per split of data sets whose size the config does not state (the standard splits).
KNOWN_SPLIT_SIZES = {"nyuv2": {"train": 795, "val": 654, "test": 654}}


@dataclass(frozen=True)
class Work:
    """Per-image model work: forwards, backwards to the input after a forward, and training steps (one
    forward and one backward to the weights, with the optimiser's update)."""

    forwards: float = 0.0
    backwards: float = 0.0
    train_steps: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(
            self.forwards + other.forwards,
            self.backwards + other.backwards,
            self.train_steps + other.train_steps,
        )

    def __mul__(self, factor: float) -> Work:
        return Work(self.forwards * factor, self.backwards * factor, self.train_steps * factor)

    __rmul__ = __mul__


FORWARD = Work(forwards=1)


def attack_work(attack: Attack, n_tasks: int) -> Work:
    """One call of the attack on an image: each gradient a forward and the direction's backwards, plus the
    forwards it takes without a backward (queries, a clean state)."""
    gradients = attack.gradients_per_image
    backwards = attack.direction.backwards_per_gradient(n_tasks)
    return Work(forwards=gradients + attack.forwards_per_image, backwards=gradients * backwards)


def cell_work(attack: Mapping[str, Any], direction: Any, tasks: Sequence[str]) -> Work:
    """One cell on one image: the attack (an ensemble: every member, its scoring forwards and one
    evaluation forward per rule), then the forward that scores x_adv."""
    spec = attack_spec(attack, direction)
    if spec.is_ensemble:
        ensemble = spec.build(list(tasks))
        members = sum((attack_work(m, len(tasks)) for m in ensemble.members.values()), Work())
        return members + FORWARD * (ensemble.forwards_per_image + len(ensemble.rules))
    return attack_work(spec.build(), len(tasks)) + FORWARD


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


def epochs_and_steps(cfg: DictConfig) -> tuple[float, int]:
    """(epochs, optimiser-loop iterations) of the training."""
    n_train = split_size(cfg, "train")
    per_epoch = math.ceil(n_train / int(cfg.data.batch_size))
    max_steps = int(cfg.train.get("max_steps", -1) or -1)
    if max_steps > 0:
        return max_steps / per_epoch, max_steps
    return float(cfg.train.max_epochs), int(cfg.train.max_epochs) * per_epoch


def defense_work(cfg: DictConfig, n_tasks: int) -> Work:
    """One training iteration on one image: the training steps it takes and the attack that crafts its
    adversarial batch. The paper's recipe (`clean_then_adv`) and `mixed` take a clean and an adversarial
    step; the fast methods one attack gradient (GradAlign a double backward more); Free AT's input gradient
    comes with its weight step. A gradient aggregator adds a backward per task beyond the first to every
    optimiser step."""
    procedure = training_procedure(cfg)
    work = _defense_work(procedure.defense, n_tasks)
    if procedure.mtl in AGGREGATORS:  # one backward per task instead of one, per optimiser step
        work = work + Work(backwards=(n_tasks - 1) * work.train_steps)
    return work


def _defense_work(spec: DefenseSpec, n_tasks: int) -> Work:
    if spec.is_none:
        return Work(train_steps=1)
    if spec.is_pgd_at:
        crafted = attack_work(attack_spec(dict(spec.attack), spec.direction_config).build(), n_tasks)
        return crafted + Work(train_steps=1 if spec.mode == "adv_only" else 2)
    assert spec.fast is not None
    if spec.fast.method == "free_at":
        return Work(train_steps=1)
    step = Work(forwards=1, backwards=1, train_steps=1)
    if spec.fast.grad_align > 0:  # two input gradients with their graph, differentiated
        step = step + Work(forwards=1, backwards=3)
    return step


def training_procedure(cfg: DictConfig) -> TrainingProcedure:
    """The procedure the config trains (its `defense` and `mtl` groups)."""

    def part(name: str) -> Any:
        return OmegaConf.to_container(cfg[name], resolve=True) if cfg.get(name) else None

    return TrainingProcedure.from_config(part("defense"), part("mtl"))


def training_work(cfg: DictConfig) -> Work:
    """The whole training, in image-units of work: iterations x batch x one iteration's work."""
    _, steps = epochs_and_steps(cfg)
    return defense_work(cfg, len(cfg.data.tasks)) * (steps * int(cfg.data.batch_size))


def validation_work(cfg: DictConfig) -> Work:
    """The validation forwards around a training: the sanity check, every `check_val_every_n_epoch`-th
    epoch and the final validation the train job prints."""
    n_val = split_size(cfg, "val")
    batch = int(cfg.data.get("eval_batch_size") or cfg.data.batch_size)
    epochs, _ = epochs_and_steps(cfg)
    every = int((cfg.get("trainer") or {}).get("check_val_every_n_epoch") or 1)
    sanity = min(n_val, int((cfg.get("trainer") or {}).get("num_sanity_val_steps", 2) or 0) * batch)
    return FORWARD * (sanity + n_val * (math.floor(epochs / every) + 1))


def co_watch_work(cfg: DictConfig) -> Work:
    """The catastrophic-overfitting watch's FGSM and PGD probes on its fixed batch during training."""
    watch = ((cfg.get("callbacks") or {}).get("co_watch")) or {}
    if not watch or not watch.get("enabled", True) or not watch.get("every_n_steps"):
        return Work()
    _, steps = epochs_and_steps(cfg)
    checks = max(1, steps // int(watch.every_n_steps))
    gradients = 1 + int(watch.get("pgd_steps", 10))  # FGSM, PGD; clean and both scored
    return Work(forwards=gradients + 3, backwards=gradients) * (checks * int(watch.get("num_images", 16)))


def diagnostics_work(cfg: DictConfig, n_tasks: int, eval_batch: int) -> Work:
    """The gradient-masking checks on `max_batches` batches: PGD at eps and 2 eps, APGD at eps, with 4x
    the steps, at eps = 1 and its best-iterate re-check (9x the steps), a backward per task, noise, scores."""
    diag = cfg.get("diagnostics") or {}
    if not diag.get("enabled", False):
        return Work()
    images = int(diag.get("max_batches", 1) or 1) * eval_batch
    gradients = 9 * int(diag.get("steps", 10)) + n_tasks
    return Work(forwards=gradients + 8, backwards=gradients) * images
