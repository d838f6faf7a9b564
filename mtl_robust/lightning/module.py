"""LightningModule that trains any layout on any data set with per-task losses and torchmetrics.

Its hyper-parameters are plain, JSON-like dicts (the model spec and the task configs), so a checkpoint
rebuilds the model and its tasks without the Hydra config that trained it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from mtl_robust.models import build_model
from mtl_robust.tasks import Task, build_task

Batch = tuple[Tensor, dict[str, Tensor]]

PAPER_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": (0.5, 0.999), "weight_decay": 1e-4}


class MultiTaskModule(pl.LightningModule):
    def __init__(
        self,
        model_spec: Mapping[str, Any],
        task_configs: Mapping[str, Mapping[str, Any]],
        loss_weights: Mapping[str, float] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
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
        self.val_metrics = nn.ModuleDict({t: task.metric() for t, task in self.tasks.items()})
        self.test_metrics = nn.ModuleDict({t: task.metric() for t, task in self.tasks.items()})

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
        x, targets = batch
        losses = self.task_losses(self.model(x), targets)
        total = self.weighted_loss(losses)
        self._log_losses("train", losses, total, x.shape[0])
        return total

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
                self.log(f"{split}/{t}/{name}", value, sync_dist=False)
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


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Task]]:
    """Model (eval mode) and task specs from a checkpoint alone, without the config that trained it."""
    module = MultiTaskModule.load_from_checkpoint(path, map_location=map_location)
    model = module.model.eval()
    return model, module.tasks
