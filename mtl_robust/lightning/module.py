"""LightningModule that trains any layout on any data set with per-task losses and torchmetrics.

Its hyper-parameters are plain, JSON-like dicts (the model spec and the task configs), so a checkpoint
rebuilds the model and its tasks without the Hydra config that trained it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from mtl_robust.attacks.config import attack_spec
from mtl_robust.lightning.fast_at import FastAdversarialTraining, LossParts, checked
from mtl_robust.lightning.training_cost import TrainingCost
from mtl_robust.models import build_model
from mtl_robust.mtl import build_method
from mtl_robust.mtl.methods import SUMS
from mtl_robust.tasks import Task, build_task
from mtl_robust.values.training import DEFAULT_MTL, DEFENSE_MODES, DEFENSES, TrainingProcedure

__all__ = ["DEFENSES", "DEFENSE_MODES", "MultiTaskModule", "defense_name", "load_checkpoint", "load_module"]

Batch = tuple[Tensor, dict[str, Tensor]]

PAPER_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": (0.5, 0.999), "weight_decay": 1e-4}


def defense_name(defense: Mapping[str, Any] | None, mtl: Mapping[str, Any] | None = None) -> str:
    """ "none", e.g. "adv_train:pgd-total", "fgsm_rs:dgba", "none+pcgrad": how rows and reports name a
    training procedure (values/training.py)."""
    return str(TrainingProcedure.from_config(defense, mtl))


class MultiTaskModule(pl.LightningModule):
    def __init__(
        self,
        model_spec: Mapping[str, Any],
        task_configs: Mapping[str, Mapping[str, Any]],
        loss_weights: Mapping[str, float] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        scheduler_interval: str = "step",
        defense: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        mtl: Mapping[str, Any] | None = None,
    ) -> None:
        """`mtl`: the multi-task method's config (None: `ew`, as every checkpoint from before it)."""
        super().__init__()
        self.save_hyperparameters()
        self.defense = dict(defense) if defense and defense.get("name", "none") != "none" else None
        self.procedure = TrainingProcedure.from_config(self.defense, mtl)  # the one parse of both configs
        self._build(model_spec, task_configs, loss_weights, optimizer, scheduler, scheduler_interval)
        self._build_mtl()
        self.meta = dict(meta or {})
        # Forward/backward passes and wall time of training (saved in checkpoints; rows carry them).
        self.training_cost = TrainingCost()
        self.training_cost.attach(self.model)
        self.co_watch_summary: dict[str, Any] | None = None  # filled by the catastrophic-overfitting watch
        self.val_metrics = nn.ModuleDict({t: task.metric() for t, task in self.tasks.items()})
        self.test_metrics = nn.ModuleDict({t: task.metric() for t, task in self.tasks.items()})

    def _build(
        self,
        model_spec: Mapping[str, Any],
        task_configs: Mapping[str, Mapping[str, Any]],
        loss_weights: Mapping[str, float] | None,
        optimizer: Mapping[str, Any] | None,
        scheduler: Mapping[str, Any] | None,
        scheduler_interval: str,
    ) -> None:
        self.model = build_model(**model_spec)
        self.tasks: dict[str, Task] = {name: build_task(**cfg) for name, cfg in task_configs.items()}
        if set(self.tasks) != set(self.model.tasks):
            raise ValueError(
                f"task configs {sorted(self.tasks)} do not match the model's tasks {self.model.tasks}"
            )
        weights = dict(loss_weights or {})
        unknown = set(weights) - set(self.tasks)
        if unknown:
            raise ValueError(
                f"loss_weights names unknown tasks {sorted(unknown)}; tasks are {sorted(self.tasks)}"
            )
        self.loss_weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self.optimizer_cfg = dict(optimizer or PAPER_OPTIMIZER)
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        self.scheduler_interval = scheduler_interval
        spec = self.procedure.defense
        self.adversary = None
        self.fast_at: FastAdversarialTraining | None = None
        if spec.fast is not None:
            self.fast_at = FastAdversarialTraining(checked(spec.fast), self.tasks, self.loss_weights)
            self.automatic_optimization = False  # replays and GradAlign need the step in our hands
        elif spec.is_pgd_at:
            self.defense_mode = spec.mode
            self.mix_weight = spec.mix_weight
            # Built once; it reads the current weights on every call, so it attacks the model being trained.
            attack = attack_spec(dict(spec.attack), spec.direction_config)
            if attack.surrogate is not None:
                raise ValueError("adversarial training crafts on the model it trains: drop attack.surrogate")
            self.adversary = attack.build()
            self.automatic_optimization = False  # two optimiser steps per batch in the paper's recipe

    def _build_mtl(self) -> None:
        """The multi-task method, part of the procedure's name; `static` brings its own loss weights."""
        options = dict(self.procedure.mtl_options)
        if self.procedure.mtl == "static":
            self.loss_weights = static_weights(options.pop("weights", None), self.hparams, list(self.tasks))
            if self.fast_at is not None:
                self.fast_at.loss_weights = dict(self.loss_weights)
        # Registered as a submodule only when it holds parameters (UW), so an `ew` state dict is unchanged.
        method = build_method(self.procedure.mtl, options, list(self.tasks), self.loss_weights)
        if any(True for _ in method.parameters()):
            self.mtl_method = method
        else:
            object.__setattr__(self, "mtl_method", method)
        if method.is_aggregator:
            self.automatic_optimization = False  # the update is built from per-task gradients
        if self.fast_at is not None:
            # Free AT's delta shares the weights' backward only for a plain sum (one backward of it).
            self.fast_at.shared_backward &= self.procedure.mtl in SUMS

    def forward(self, x: Tensor, tasks: list[str] | None = None) -> dict[str, Tensor]:
        return self.model(x, tasks=tasks)

    def task_losses(self, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Batch-mean loss per task (each sample's loss is the mean over its valid pixels)."""
        return {t: task.loss(preds[t], targets[t]).mean() for t, task in self.tasks.items()}

    def weighted_loss(self, losses: Mapping[str, Tensor]) -> Tensor:
        return sum(self.loss_weights[t] * loss for t, loss in losses.items())

    def _log_losses(self, split: str, losses: Mapping[str, Tensor], total: Tensor, batch_size: int) -> None:
        on_step = split == "train"
        self.log(f"{split}/loss", total, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=batch_size)
        for t, loss in losses.items():
            self.log(f"{split}/{t}/loss", loss, on_step=on_step, on_epoch=True, batch_size=batch_size)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.fast_at is not None:
            return self._fast_training_step(batch)
        if self.adversary is not None:
            return self._adversarial_training_step(batch)
        x, targets = batch
        losses = self.task_losses(self.model(x), targets)
        total = self._objective(losses)
        self._log_losses("train", losses, total, x.shape[0])
        if not self.mtl_method.is_aggregator:
            return total  # Lightning's automatic optimisation
        self._optimizer_step(losses)
        self._scheduler_step()
        return total.detach()

    def _objective(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The scalar the multi-task method minimises; for an aggregator (no such scalar) the weighted sum,
        which the logs show."""
        if self.mtl_method.is_aggregator:
            return self.weighted_loss(losses)
        return self.mtl_method.objective(losses)

    def _optimizer_step(
        self, losses: Mapping[str, Tensor], objective: Tensor | None = None, penalty: Tensor | None = None
    ) -> None:
        """One weight update from the per-task losses: an aggregator combines their gradients; a sum or a
        weighting backpropagates `objective` (its scalar, penalty included) when given, else its own."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        if self.mtl_method.is_aggregator:
            self.mtl_method.aggregate_backward(losses, list(self.model.parameters()), penalty)
        else:
            if objective is None:
                objective = self.mtl_method.objective(losses)
                objective = objective if penalty is None else objective + penalty
            self.manual_backward(objective)
        optimizer.step()

    def _scheduler_step(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.scheduler_interval == "step":
            scheduler.step()

    def _adversarial_training_step(self, batch: Batch) -> Tensor:
        x, targets = batch
        clean_total = None
        if self.defense_mode in ("clean_then_adv", "mixed"):
            clean_losses = self.task_losses(self.model(x), targets)
            clean_total = self._objective(clean_losses)
            self._log_losses("train_clean", clean_losses, clean_total, x.shape[0])
            if self.defense_mode == "clean_then_adv":
                self._optimizer_step(clean_losses, clean_total)
        # Crafted in eval mode by the attack (which restores train mode), against the current weights.
        x_adv = self.adversary(self.model, x, targets, self.tasks)
        adv_losses = self.task_losses(self.model(x_adv), targets)
        adv_total = self._objective(adv_losses)
        self._log_losses("train", adv_losses, adv_total, x.shape[0])
        losses, loss = adv_losses, adv_total
        if self.defense_mode == "mixed":
            mix = self.mix_weight
            losses = {t: (1.0 - mix) * clean_losses[t] + mix * adv_losses[t] for t in adv_losses}
            loss = (1.0 - mix) * clean_total + mix * adv_total
        self._optimizer_step(losses, loss)
        self._scheduler_step()
        return loss.detach()

    def _fast_training_step(self, batch: Batch) -> Tensor:
        x, targets = batch
        plain_sum = self.procedure.mtl in SUMS  # its loss is the method's objective: backpropagated as is

        def optimizer_step(loss: Tensor, parts: LossParts) -> None:
            self._optimizer_step(parts.losses, loss if plain_sum else None, parts.penalty)
            # One scheduler step per optimiser step: Free AT's m replays per batch over epochs / m keep the
            # schedule of clean training.
            self._scheduler_step()

        result = self.fast_at.step(self.model, self.tasks, x, targets, optimizer_step)
        self._log_losses("train", result.losses, result.total, x.shape[0])
        return result.total

    def on_fit_start(self) -> None:
        precision = str(self.trainer.precision)
        if self.mtl_method.is_aggregator and not precision.startswith(("32", "64")):
            raise ValueError(
                f"mtl={self.procedure.mtl} builds its update from per-task gradients outside Lightning's "
                f"gradient scaling: train it in full precision (trainer.precision=32), not {precision}"
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.training_cost.begin_iteration()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.training_cost.end_iteration(self.procedure.defense.optimizer_steps_per_batch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["training_cost"] = self.training_cost.as_dict()
        if self.co_watch_summary is not None:
            checkpoint["co_watch"] = dict(self.co_watch_summary)
        if self.procedure.mtl != DEFAULT_MTL:
            checkpoint["mtl"] = self.mtl_method.state()  # the final (learned, dynamic) task weights

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.training_cost.load(checkpoint.get("training_cost") or {})
        self.co_watch_summary = checkpoint.get("co_watch")
        self.mtl_method.load_state(checkpoint.get("mtl") or {})

    def training_record(self) -> dict[str, Any] | None:
        """What training cost and what the overfitting watch saw; None for checkpoints from before it."""
        if self.training_cost.iterations == 0:
            return None
        record: dict[str, Any] = {"cost": self.training_cost.as_dict()}
        if self.co_watch_summary is not None:
            record["co_watch"] = dict(self.co_watch_summary)
        return record

    def on_train_epoch_end(self) -> None:
        self.mtl_method.end_epoch()
        manual = not self.automatic_optimization
        scheduler = self.lr_schedulers() if manual else None
        if scheduler is not None and self.scheduler_interval == "epoch":
            # Free AT's epoch is `replays` passes over the data: as many scheduler epochs.
            for _ in range(self.fast_at.optimizer_steps_per_batch if self.fast_at is not None else 1):
                scheduler.step()

    def _eval_step(self, batch: Batch, split: str, metrics: nn.ModuleDict) -> None:
        x, targets = batch
        preds = self.model(x)
        losses = self.task_losses(preds, targets)
        self._log_losses(split, losses, self.weighted_loss(losses), x.shape[0])
        for t in self.tasks:
            metrics[t].update(preds[t], targets[t])

    def _log_metrics(self, split: str, metrics: nn.ModuleDict) -> None:
        for t in self.tasks:
            for name, value in metrics[t].compute().items():
                # Already synced by torchmetrics; sync_dist only keeps Lightning from warning under DDP.
                self.log(f"{split}/{t}/{name}", value, sync_dist=True)
            metrics[t].reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.optimizer_cfg, params=self.parameters(), _convert_="all")
        if self.scheduler_cfg is None:
            return optimizer
        scheduler = instantiate(self.scheduler_cfg, optimizer=optimizer, _convert_="all")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }


def static_weights(weights: Any, hparams: Mapping[str, Any], tasks: list[str]) -> dict[str, float]:
    """`mtl=static`'s weights: one per task, given in `mtl.weights` and nowhere else."""
    if hparams.get("loss_weights"):
        raise ValueError(
            "mtl=static takes its weights from mtl.weights; train.loss_weights must stay null (one place)"
        )
    if not isinstance(weights, Mapping) or set(weights) != set(tasks):
        raise ValueError(
            f"mtl=static needs one weight per task in mtl.weights, e.g. {dict.fromkeys(tasks, 1.0)}"
        )
    return {t: float(weights[t]) for t in tasks}


def _without_pretrained_weights(hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters with the backbone's `weights` file dropped: the checkpoint's state_dict holds
    the trained weights, so a reload must neither need nor re-read the ImageNet file it started from."""
    spec = hparams.get("model_spec")
    backbone = spec.get("backbone") if isinstance(spec, Mapping) else None
    if isinstance(backbone, Mapping) and "weights" in backbone:
        backbone = {k: v for k, v in backbone.items() if k != "weights"}
        hparams = {**hparams, "model_spec": {**spec, "backbone": backbone}}
    return hparams


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> MultiTaskModule:
    """The trained module (eval mode) from a checkpoint alone, without the config that trained it.

    Loaded with `weights_only=True` (see lightning/checkpoints.py); a bad file raises CheckpointError
    naming it.
    """
    from mtl_robust.lightning.checkpoints import CheckpointError, read_checkpoint

    checkpoint = read_checkpoint(path, map_location)
    try:
        module = MultiTaskModule(**_without_pretrained_weights(dict(checkpoint["hyper_parameters"])))
        module.load_state_dict(checkpoint["state_dict"])
        module.on_load_checkpoint(checkpoint)  # Lightning's own loader calls this hook too
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint {path} does not rebuild a multi-task model ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); expected a checkpoint written by "
            "`python -m mtl_robust.train`"
        ) from err
    return module.to(map_location).eval()


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Task]]:
    """Model (eval mode) and task specs from a checkpoint: what an attack needs, e.g. in a notebook."""
    module = load_module(path, map_location)
    return module.model, module.tasks
