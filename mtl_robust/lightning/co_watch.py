"""Catastrophic-overfitting watch: a periodic FGSM and PGD check on a fixed small batch during training.

Single-step adversarial training can overfit catastrophically: within an epoch or two the model becomes
robust to the single-step attack it trains on while multi-step PGD robustness collapses. The watch measures,
on the same images every check, each attack's robustness `r = L(x) / L(x_adv)` (the training loss on clean
over adversarial images: 1 = the attack does nothing, near 0 = it wrecks every task) and logs
`co_watch/fgsm_robustness`, `co_watch/pgd_robustness` and their gap. A collapse is PGD robustness falling
by more than `drop` (relative) from its best check while FGSM robustness, measured against the same check,
fell less than a third as much. (Both fall together while a model learns to use its input, which is no
collapse.) Then the watch warns and, with `on_collapse=stop` or `restore`, stops training (`restore` first
puts back the weights of the check with the best PGD robustness). Its verdict lands in the checkpoint and
in every results row.

The attacks use the defense's own eps, direction and norm (TOTAL, 8/255 and L-inf for undefended models;
PGD-AT under L2 is watched with FGM and PGD under L2) and a fixed random-start seed, so the watch neither
consumes nor shifts the training's random numbers.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from mtl_robust.attacks.config import attack_spec
from mtl_robust.attacks.fgsm import FGSM
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.pgd import PGD
from mtl_robust.values.norm import Norm
from mtl_robust.values.training import PAPER_EPS, DefenseSpec

log = logging.getLogger(__name__)

ACTIONS = ("warn", "stop", "restore")


# A collapse needs FGSM robustness to fall less than this share of PGD robustness's fall.
FGSM_SHARE = 1 / 3


@dataclass
class CollapseDetector:
    """The collapse rule on a stream of (FGSM, PGD) robustness values, one pair per check."""

    drop: float
    best_pgd: float = -math.inf
    fgsm_at_best: float = math.nan  # FGSM robustness at the check with the best PGD robustness
    history: list[tuple[float, float]] = field(default_factory=list)

    def update(self, fgsm: float, pgd: float) -> bool:
        """True when this check shows a collapse (judged against the best earlier check)."""
        collapsed = False
        if self.history and self.best_pgd > 0 and self.fgsm_at_best > 0:
            pgd_fall = 1.0 - pgd / self.best_pgd
            fgsm_fall = 1.0 - fgsm / self.fgsm_at_best
            collapsed = pgd_fall > self.drop and fgsm_fall < FGSM_SHARE * pgd_fall
        self.history.append((fgsm, pgd))
        if pgd > self.best_pgd:
            self.best_pgd, self.fgsm_at_best = pgd, fgsm
        return collapsed


def watched_attack_settings(defense: DefenseSpec | dict[str, Any] | None) -> tuple[float, str]:
    """(eps, direction) the defense trains against; 8/255 and TOTAL without a defense."""
    spec = defense if isinstance(defense, DefenseSpec) else DefenseSpec.from_config(defense)
    if spec.is_none:
        return PAPER_EPS, "total"
    if spec.fast is not None:
        return spec.fast.eps, spec.fast.direction
    # Normalised like the attack training builds, so `defense.attack.pixel_eps=4` is watched at 4/255 too.
    attack = dict(spec.attack)
    if attack.get("eps") is None and attack.get("pixel_eps") is None:
        attack["eps"] = PAPER_EPS  # the paper's budget only where the defense gives none in either unit
    built = attack_spec(attack, spec.direction_config)
    return built.config["eps"], str(built.direction)


def watched_norm(defense: DefenseSpec | dict[str, Any] | None) -> Norm:
    """The threat model the defense trains under: its attack's norm (L-inf for fast AT and no defense)."""
    spec = defense if isinstance(defense, DefenseSpec) else DefenseSpec.from_config(defense)
    return spec.norm


class CatastrophicOverfittingWatch(pl.Callback):
    def __init__(
        self,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        num_images: int = 16,
        split: str = "val",
        pgd_steps: int = 10,
        drop: float = 0.3,
        on_collapse: str = "warn",
        seed: int = 0,
    ) -> None:
        if int(every_n_epochs) < 1 or int(num_images) < 1 or int(pgd_steps) < 1:
            raise ValueError(
                "co_watch: every_n_epochs, num_images and pgd_steps must be >= 1, got "
                f"{every_n_epochs}, {num_images}, {pgd_steps}"
            )
        if not 0.0 < float(drop) < 1.0:
            raise ValueError(f"co_watch.drop must lie in (0, 1), got {drop}")
        if on_collapse not in ACTIONS:
            raise ValueError(f"co_watch.on_collapse must be one of {ACTIONS}, got {on_collapse!r}")
        if every_n_steps is not None and int(every_n_steps) < 1:
            raise ValueError(f"co_watch.every_n_steps must be >= 1 or null, got {every_n_steps}")
        self.every_n_epochs = int(every_n_epochs)
        # Checks by optimiser steps instead of epochs (Free AT runs few, long epochs).
        self.every_n_steps = None if every_n_steps is None else int(every_n_steps)
        self._checked_at_step = 0
        self.num_images = int(num_images)
        self.split = split
        self.pgd_steps = int(pgd_steps)
        self.on_collapse = on_collapse
        self.seed = int(seed)
        self.detector = CollapseDetector(float(drop))
        self.batch: tuple[Tensor, dict[str, Tensor]] | None = None
        self.collapse_at: str | None = None
        self.best_at: str | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.restored = False

    # --------------------------------------------------------------------------------------- set-up
    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        dataset = trainer.datamodule.dataset(self.split)
        items = [dataset[i] for i in range(min(self.num_images, len(dataset)))]
        x = torch.stack([item[0] for item in items])
        targets = {t: torch.stack([item[1][t] for item in items]) for t in items[0][1]}
        self.batch = (x, targets)
        eps, direction = watched_attack_settings(pl_module.procedure.defense)
        norm = watched_norm(pl_module.procedure.defense)
        self.fgsm = FGSM(eps, direction=direction, norm=norm)
        # Random start and larger steps than the paper's eps/10: the usual catastrophic-overfitting check.
        self.pgd = PGD(
            eps,
            alpha=2.5 * eps / self.pgd_steps,
            steps=self.pgd_steps,
            random_start=True,
            direction=direction,
            seed=self.seed,
            norm=norm,
        )
        self._publish(pl_module)

    # ---------------------------------------------------------------------------------------- checks
    def training_loss(self, pl_module: Any, x: Tensor, targets: dict[str, Tensor]) -> float:
        with torch.no_grad():
            losses = pl_module.task_losses(pl_module.model(x), targets)
            return float(pl_module.weighted_loss(losses))

    def check(self, pl_module: Any) -> tuple[float, float]:
        """(FGSM robustness, PGD robustness) of the current weights on the fixed batch."""
        assert self.batch is not None, "the watch checks after on_fit_start"
        device = pl_module.device
        x = self.batch[0].to(device)
        targets = {t: v.to(device) for t, v in self.batch[1].items()}
        model, tasks = pl_module.model, pl_module.tasks
        with eval_mode(model):
            clean = self.training_loss(pl_module, x, targets)
            x_fgsm = self.fgsm(model, x, targets, tasks)
            x_pgd = self.pgd(model, x, targets, tasks)
            fgsm = clean / max(self.training_loss(pl_module, x_fgsm, targets), 1e-12)
            pgd = clean / max(self.training_loss(pl_module, x_pgd, targets), 1e-12)
        return fgsm, pgd

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step // self.every_n_steps > self._checked_at_step // self.every_n_steps:
            self._checked_at_step = step
            self._watch(trainer, pl_module, f"step {step}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.every_n_steps is None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._watch(trainer, pl_module, f"epoch {trainer.current_epoch}")

    def _watch(self, trainer: pl.Trainer, pl_module: Any, when: str) -> None:
        if self.restored:
            return
        with pl_module.training_cost.paused():
            fgsm, pgd = self.check(pl_module)
        previous_best = self.detector.best_pgd
        collapsed = self.detector.update(fgsm, pgd)
        for name, value in (("fgsm_robustness", fgsm), ("pgd_robustness", pgd), ("gap", fgsm - pgd)):
            pl_module.log(f"co_watch/{name}", value, on_step=False, on_epoch=True, sync_dist=True)
        log.info("co_watch %s: robustness FGSM %.3f, PGD %.3f (gap %.3f)", when, fgsm, pgd, fgsm - pgd)
        if pgd > previous_best:
            self.best_at = when
            if self.on_collapse == "restore":
                self.best_state = copy.deepcopy(
                    {k: v.detach() for k, v in pl_module.model.state_dict().items()}
                )
        if collapsed:
            if self.collapse_at is None:
                self.collapse_at = when
            rank_zero_warn(
                f"catastrophic overfitting at {when}: PGD robustness fell from {self.detector.best_pgd:.3f} "
                f"to {pgd:.3f} while FGSM robustness went from {self.detector.fgsm_at_best:.3f} to "
                f"{fgsm:.3f} (co_watch.on_collapse={self.on_collapse})"
            )
            if self.on_collapse == "restore" and self.best_state is not None:
                pl_module.model.load_state_dict(self.best_state)
                self.restored = True
            if self.on_collapse in ("stop", "restore"):
                trainer.should_stop = True
        self._publish(pl_module)

    def _publish(self, pl_module: Any) -> None:
        """The verdict the module saves into its checkpoint (and evaluation copies into rows)."""
        pl_module.co_watch_summary = {
            "checks": len(self.detector.history),
            "collapsed": self.collapse_at is not None,
            "collapse_at": self.collapse_at,
            "best_at": self.best_at,
            "action": self.on_collapse,
            "restored": self.restored,
            "history": [[round(f, 6), round(p, 6)] for f, p in self.detector.history],
        }
