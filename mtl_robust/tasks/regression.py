"""Plain dense regression (Taskonomy keypoints2d, edge_texture): masked L1 loss and pooled mean error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtl_robust.tasks.base import Task, TaskMetric


class RegressionTask(Task):
    """Dense regression spec. Targets: float [N, C, H, W] (or [N, H, W] for C = 1).

    Every pixel is valid, or, with `ignore_value`, every pixel where some channel differs from it.
    Loss per sample: mean |p - g| over valid pixels and channels. Metric `err`: the same mean absolute
    error pooled over every valid pixel of the dataset.
    """

    metric_directions = {"err": False}
    default_metrics = ("err",)
    loss_name = "l1"

    def __init__(
        self,
        name: str,
        out_channels: int = 1,
        ignore_value: float | None = None,
        *,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            name, out_channels, target_channels=int(out_channels), resize=resize, metrics=metrics
        )
        self.ignore_value = None if ignore_value is None else float(ignore_value)

    def _extra_config(self) -> dict[str, Any]:
        return {"out_channels": self.out_channels, "ignore_value": self.ignore_value}

    def _valid(self, target: Tensor) -> Tensor:
        if self.ignore_value is None:
            return torch.ones(target.shape[0], *target.shape[2:], dtype=torch.bool, device=target.device)
        return (target != self.ignore_value).any(dim=1)

    def _pixel_loss(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return (pred - target).abs().mean(dim=1), self._valid(target).float()

    def _make_metric(self, **metric_kwargs: Any) -> RegressionMetric:
        return RegressionMetric(self, **metric_kwargs)


class RegressionMetric(TaskMetric):
    task_spec: RegressionTask
    abs_sum: Tensor
    count: Tensor

    def __init__(self, task: RegressionTask, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        self._add_sum("abs_sum")
        self._add_sum("count", dtype=torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = self.task_spec._metric_inputs(pred, target)
        valid = self.task_spec._valid(target)
        per_pixel = (pred - target).abs().mean(dim=1)
        self.abs_sum += per_pixel[valid].sum(dtype=torch.float64)
        self.count += valid.sum()

    def _compute_all(self) -> dict[str, Tensor]:
        return {"err": self.abs_sum / self.count.double()}
