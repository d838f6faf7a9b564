"""Binary dense tasks (saliency, edges): a one-channel logit, weighted BCE, threshold-sweep metrics.

The prediction is a raw logit [N, 1, h, w]; targets are float [N, 1, H, W] with values in {0, 1} (a value
above 0.5 counts as positive) and `ignore_value` (255) at unlabelled or padded pixels.

Loss per sample: mean over valid pixels of c(y) * BCE(logit, y), where c is the class weight. With a fixed
`pos_weight` w, positives weigh w and negatives 1 - w (the edge loss of MTI-Net/ATRC/InvPT uses
w = 0.95). With `pos_weight=None` the weight is set per sample from its label balance: positives weigh the
share of negative pixels and negatives the share of positive ones (the "balanced" cross-entropy of those
code bases, which balance per batch; here per sample, so that the loss of one image does not depend on
the others in its batch, as attacks need).

Metrics sweep the decision threshold over a fixed grid of `num_thresholds` equal-width probability bins
and pool the pixel counts over the whole data set (sum-reduced states, so they sync across processes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl_robust.tasks.base import Task, TaskMetric, bincount


class BinaryTask(Task):
    """Shared spec of the binary tasks; subclasses set the name, the metrics and `beta_sq`."""

    loss_name = "bce"
    beta_sq: float = 1.0

    def __init__(
        self,
        name: str,
        pos_weight: float | None,
        ignore_value: float = 255.0,
        num_thresholds: int = 100,
        *,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        if pos_weight is not None and not 0.0 < float(pos_weight) < 1.0:
            raise ValueError(f"task {name!r}: pos_weight must lie in (0, 1) or be None, got {pos_weight!r}")
        if int(num_thresholds) < 2:
            raise ValueError(f"task {name!r}: num_thresholds must be >= 2, got {num_thresholds!r}")
        super().__init__(name, 1, target_channels=1, resize=resize, metrics=metrics)
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.ignore_value = float(ignore_value)
        self.num_thresholds = int(num_thresholds)
        self.loss_name = "balanced_bce" if pos_weight is None else "weighted_bce"

    def _extra_config(self) -> dict[str, Any]:
        return {
            "pos_weight": self.pos_weight,
            "ignore_value": self.ignore_value,
            "num_thresholds": self.num_thresholds,
        }

    def _valid(self, target: Tensor) -> Tensor:
        return target[:, 0] != self.ignore_value

    def class_weights(self, positive: Tensor, valid: Tensor) -> Tensor:
        """Per-pixel class weight [N, H, W] (0 at invalid pixels)."""
        if self.pos_weight is not None:
            w = torch.full(positive.shape[:1], self.pos_weight, device=positive.device)
        else:
            n_valid = valid.sum(dim=(1, 2)).clamp_min(1)
            w = (valid & ~positive).sum(dim=(1, 2)) / n_valid  # share of negatives weighs the positives
        w = w.view(-1, 1, 1).float()
        return torch.where(positive, w, 1.0 - w) * valid

    def pixel_bce(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(class-weighted BCE per pixel, validity as float), [N, H, W] each."""
        valid = self._valid(target)
        positive = (target[:, 0] > 0.5) & valid
        bce = F.binary_cross_entropy_with_logits(pred[:, 0], positive.float(), reduction="none")
        return self.class_weights(positive, valid) * bce, valid.float()

    def _pixel_loss(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.pixel_bce(pred, target)

    def _make_metric(self, **metric_kwargs: Any) -> BinaryMetric:
        return BinaryMetric(self, **metric_kwargs)


class BinaryMetric(TaskMetric):
    """Histograms of the predicted probability over positive and negative pixels, plus the pooled loss.

    The threshold of bin b is b / num_thresholds (a pixel is predicted positive when its probability is
    at least that); every metric that needs a threshold reports the best one over the grid.
    """

    task_spec: BinaryTask
    hist_pos: Tensor
    hist_neg: Tensor
    loss_sum: Tensor
    count: Tensor

    def __init__(self, task: BinaryTask, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        self._add_sum("hist_pos", task.num_thresholds, dtype=torch.long)
        self._add_sum("hist_neg", task.num_thresholds, dtype=torch.long)
        self._add_sum("loss_sum")
        self._add_sum("count", dtype=torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        task = self.task_spec
        pred, target = task._metric_inputs(pred, target)
        loss, valid_f = task.pixel_bce(pred, target)
        valid = valid_f.bool()
        positive = (target[:, 0] > 0.5)[valid]
        k = task.num_thresholds
        bins = torch.floor(torch.sigmoid(pred[:, 0])[valid] * k).long().clamp(0, k - 1)
        self.hist_pos += bincount(bins[positive], k)
        self.hist_neg += bincount(bins[~positive], k)
        self.loss_sum += loss.sum(dtype=torch.float64)
        self.count += valid.sum()

    def _counts(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(TP, FP, FN, TN) per threshold, float64 [num_thresholds]."""
        pos, neg = self.hist_pos.double(), self.hist_neg.double()
        tp = pos.flip(0).cumsum(0).flip(0)  # probability >= threshold of bin b
        fp = neg.flip(0).cumsum(0).flip(0)
        return tp, fp, pos.sum() - tp, neg.sum() - fp

    def _compute_all(self) -> dict[str, Tensor]:
        tp, fp, fn, tn = self._counts()
        precision = tp / (tp + fp).clamp_min(1)
        recall = tp / (tp + fn).clamp_min(1)
        b2 = self.task_spec.beta_sq
        f = (1 + b2) * precision * recall / (b2 * precision + recall).clamp_min(1e-12)
        iou_fg = tp / (tp + fp + fn).clamp_min(1)
        iou_bg = tn / (tn + fn + fp).clamp_min(1)
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=tp.device)
        empty = self.count == 0
        best_f = nan if empty else f.max()
        return {
            "max_f": best_f,  # saliency's name (beta^2 = 0.3) ...
            "f_measure": best_f,  # ... and the edges' (beta = 1): each task lists one of them
            "miou": nan if empty else ((iou_fg + iou_bg) / 2).max(),
            "bce": self.loss_sum / self.count.double(),
        }
