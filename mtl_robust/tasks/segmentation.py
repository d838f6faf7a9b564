"""Semantic segmentation: (class-weighted) cross-entropy, confusion-matrix mIoU and pixel accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl_robust.tasks.base import Task, TaskMetric, bincount

MIOU_MODES = ("standard", "faithful")


class SegmentationTask(Task):
    """Segmentation spec. Targets: integer label maps [N, H, W] with `ignore_index` for unlabelled pixels.

    Loss per sample: sum over non-ignored pixels of w[y] * CE / sum of w[y] over those pixels, with
    w = `class_weights` (Taskonomy's prior factor) or 1 (then a plain mean CE, as for NYUv2).

    Metrics (`metrics` picks a subset): `miou` and `pixel_acc` from a dataset confusion matrix (pixel
    accuracy pooled over valid pixels), and `err`, the weighted CE pooled over the dataset (Taskonomy).
    `miou_mode="standard"` averages the IoU over classes present in the target or the prediction;
    `"faithful"` (docs/method.md, quirk 8) averages only over classes with a non-zero diagonal.
    """

    metric_directions = {"miou": True, "pixel_acc": True, "err": False}
    default_metrics = ("miou", "pixel_acc")

    def __init__(
        self,
        num_classes: int,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = 255,
        miou_mode: str = "standard",
        *,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(f"task 'seg': num_classes must be an int >= 2, got {num_classes!r}")
        num_classes = int(num_classes)
        if miou_mode not in MIOU_MODES:
            raise ValueError(f"task 'seg': miou_mode must be one of {MIOU_MODES}, got {miou_mode!r}")
        if 0 <= int(ignore_index) < num_classes:
            raise ValueError(
                f"task 'seg': ignore_index {ignore_index} is a valid class id (0..{num_classes - 1}); "
                "pick a value outside the class range, e.g. 255 or -1"
            )
        super().__init__("seg", num_classes, target_channels=None, resize=resize, metrics=metrics)
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.miou_mode = miou_mode
        self.class_weights = _as_weights(class_weights, num_classes)
        self.loss_name = "ce" if self.class_weights is None else "weighted_ce"

    def _extra_config(self) -> dict[str, Any]:
        weights = None if self.class_weights is None else self.class_weights.tolist()
        return {
            "num_classes": self.num_classes,
            "class_weights": weights,
            "ignore_index": self.ignore_index,
            "miou_mode": self.miou_mode,
        }

    def _prepare_target(self, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise ValueError(f"task 'seg': target must be a torch.Tensor, got {type(target).__name__}")
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(
                f"task 'seg': target must be an integer label map (int64, {self.ignore_index} = ignore), "
                f"got {target.dtype}; convert with target.long() after checking it holds class ids"
            )
        if target.dim() == 4 and target.shape[1] == 1:
            target = target.squeeze(1)
        if target.dim() != 3:
            raise ValueError(f"task 'seg': target must have shape [N, H, W], got {tuple(target.shape)}")
        target = target.long()
        bad = (target != self.ignore_index) & ((target < 0) | (target >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"task 'seg': target holds labels outside 0..{self.num_classes - 1} that are not the ignore "
                f"index {self.ignore_index}, e.g. {target[bad][0].item()}; check num_classes and ignore_index"
            )
        return target

    def _valid(self, target: Tensor) -> Tensor:
        return target != self.ignore_index

    def pixel_ce(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(CE per pixel, weight per pixel), [N, H, W] each; weight 0 at ignored pixels."""
        valid = self._valid(target)
        safe = torch.where(valid, target, torch.zeros_like(target))
        ce = F.cross_entropy(pred, safe, reduction="none")
        if self.class_weights is None:
            return ce, valid.float()
        return ce, self.class_weights.to(pred.device)[safe] * valid

    def _pixel_loss(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.pixel_ce(pred, target)

    def _make_metric(self, **metric_kwargs: Any) -> SegmentationMetric:
        return SegmentationMetric(self, **metric_kwargs)


class SegmentationMetric(TaskMetric):
    """Confusion matrix [target class, predicted class] plus the pooled weighted CE."""

    task_spec: SegmentationTask
    confmat: Tensor
    ce_sum: Tensor
    weight_sum: Tensor

    def __init__(self, task: SegmentationTask, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        c = task.num_classes
        self._add_sum("confmat", c * c, dtype=torch.long)
        self._add_sum("ce_sum")
        self._add_sum("weight_sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        task = self.task_spec
        pred, target = task._metric_inputs(pred, target)
        valid = task._valid(target)
        labels = pred.argmax(dim=1)
        index = target[valid] * task.num_classes + labels[valid]
        self.confmat += bincount(index, task.num_classes**2)
        if "err" in task.metrics:
            ce, weight = task.pixel_ce(pred, target)
            self.ce_sum += (ce * weight).sum(dtype=torch.float64)
            self.weight_sum += weight.sum(dtype=torch.float64)

    def _compute_all(self) -> dict[str, Tensor]:
        c = self.task_spec.num_classes
        conf = self.confmat.view(c, c).double()
        diag = conf.diagonal()
        union = conf.sum(0) + conf.sum(1) - diag
        iou = diag / union.clamp_min(1)
        keep = diag > 0 if self.task_spec.miou_mode == "faithful" else union > 0
        return {
            "miou": iou[keep].mean(),  # NaN when no class qualifies
            "pixel_acc": diag.sum() / conf.sum(),
            "err": self.ce_sum / self.weight_sum,
        }


def _as_weights(class_weights: Tensor | Sequence[float] | None, num_classes: int) -> Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32).detach().cpu().flatten()
    if weights.numel() != num_classes:
        raise ValueError(
            f"task 'seg': class_weights has {weights.numel()} entries but num_classes is {num_classes}"
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("task 'seg': class_weights must be finite and >= 0")
    return weights
