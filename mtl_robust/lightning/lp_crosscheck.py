"""Lightning callback: on sampled batches, check that the attack's closed-form step is the LP optimum.

The linear objective c of the first step from the clean batch (the attack direction's input gradient) goes
to `mtl_robust.attacks.lp.crosscheck`, which solves the step LP with HiGHS on all coordinates or on a random
subset of `max_coords`; with the MINMAX direction its per-sample step is compared with its own LP over the
tasks (`crosscheck_minmax_step`). Under L2/L1 (the attack's `norm`) the closed-form steepest step is
compared with its cone program / LP (`crosscheck_norm`), MINMAX-L2 with its SOCP and MINMAX-L1 with its LP
over the L1 step set. The largest relative objective gap is logged (`lp/max_gap`, with `lp/coords_checked`,
`lp/mismatched_coords`, `lp/subsampled`); a gap above `tol` raises, since it means the attack's projection
is not the optimal step it is meant to be.

Assumes `pl_module.model` is the MultiTaskModel, `pl_module.tasks: dict[str, Task]`, batches `(x, targets)`.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from mtl_robust.attacks import PGD, Attack, Direction
from mtl_robust.attacks.lp import CrossCheckResult, crosscheck, crosscheck_minmax_step, crosscheck_norm
from mtl_robust.attacks.minmax import MinMax, minmax_problems
from mtl_robust.values.budget import parse_budget
from mtl_robust.values.norm import Norm

log = logging.getLogger(__name__)


class LPCrossCheck(Callback):
    """Cross-check the closed-form attack step against the LP on every `every_n_batches`-th batch.

    Give either `attack` (its direction, attack losses, eps and first step size are used) or `direction`
    with `eps` (a float or a fraction such as "8/255", as configs write it) and `alpha` (default alpha = eps,
    an FGSM-sized step).
    """

    def __init__(
        self,
        every_n_batches: int = 50,
        max_coords: int | None = 20000,
        tol: float = 1e-6,
        attack: Attack | None = None,
        direction: str | Direction | None = None,
        eps: float | str = "8/255",
        alpha: float | None = None,
        on_train: bool = False,
        on_validation: bool = True,
        on_test: bool = True,
        seed: int = 0,
        norm: str | None = None,
    ) -> None:
        if int(every_n_batches) < 1:
            raise ValueError(f"every_n_batches must be >= 1, got {every_n_batches}")
        if max_coords is not None and int(max_coords) < 1:
            raise ValueError(f"max_coords must be >= 1 or None, got {max_coords}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if attack is not None and direction is not None:
            raise ValueError("give either an attack or a direction to LPCrossCheck, not both")
        if attack is None:
            budget = Norm.parse(norm).check_radius(parse_budget(eps, "lp_check.eps"), "lp_check.eps")
            step = budget if alpha is None else alpha
            attack = PGD(budget, alpha=step, steps=1, direction=direction or "dgba", norm=norm or "linf")
        self.attack = attack
        self.every_n_batches = int(every_n_batches)
        self.max_coords = None if max_coords is None else int(max_coords)
        self.tol = float(tol)
        self.stages = {"train": on_train, "val": on_validation, "test": on_test}
        self.generator = torch.Generator().manual_seed(seed)
        self.max_gap = 0.0
        self.results: list[CrossCheckResult] = []

    def _check(self, pl_module: pl.LightningModule, batch: Any, batch_idx: int, stage: str) -> None:
        if not self.stages[stage] or batch_idx % self.every_n_batches:
            return
        x, targets = batch[0], batch[1]
        norm = self.attack.norm
        if isinstance(self.attack.direction, MinMax):  # its step is an LP over the tasks, not a sign
            problems = minmax_problems(self.attack, pl_module.model, x, targets, pl_module.tasks)
            result = crosscheck_minmax_step(
                problems, self.attack.first_step_size, self.max_coords, self.generator, norm
            )
        elif not norm.is_default:
            _, c = self.attack.linear_objective(pl_module.model, x, targets, pl_module.tasks)
            result = crosscheck_norm(c, self.attack.first_step_size, norm, self.max_coords, self.generator)
        else:
            x0, c = self.attack.linear_objective(pl_module.model, x, targets, pl_module.tasks)
            result = crosscheck(
                c, x0, x0, self.attack.first_step_size, self.attack.eps, self.max_coords, self.generator
            )
        self.results.append(result)
        self.max_gap = max(self.max_gap, result.gap)
        n = int(x.shape[0])
        kwargs = {"on_step": False, "on_epoch": True, "batch_size": n}
        pl_module.log("lp/max_gap", result.gap, reduce_fx="max", **kwargs)
        pl_module.log("lp/coords_checked", float(result.n_coords), reduce_fx="sum", **kwargs)
        pl_module.log("lp/mismatched_coords", float(result.mismatched_coords), reduce_fx="sum", **kwargs)
        pl_module.log("lp/subsampled", float(result.subsampled), reduce_fx="max", **kwargs)
        if result.subsampled:
            log.info(
                "LP cross-check (%s batch %d): checked a random subset of %d of %d coordinates; gap %.3g",
                stage,
                batch_idx,
                result.n_coords,
                result.n_total,
                result.gap,
            )
        if result.gap > self.tol:
            raise RuntimeError(
                f"LP cross-check failed on {stage} batch {batch_idx}: "
                f"the closed-form step of {self.attack!r} reaches {result.closed_objective:.10g} "
                f"but the LP optimum is {result.lp_objective:.10g} "
                f"(relative gap {result.gap:.3g} > tol {self.tol:g}; {result.mismatched_coords} of "
                f"{result.n_coords} checked coordinates differ). The attack's projection/sign step is not "
                "the optimum of its linearised step."
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._check(pl_module, batch, batch_idx, "train")

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._check(pl_module, batch, batch_idx, "val")

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._check(pl_module, batch, batch_idx, "test")
