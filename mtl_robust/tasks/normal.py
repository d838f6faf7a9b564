"""Surface normals: 1 - cosine loss; angular error statistics pooled over the dataset's valid pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl_robust.tasks.base import Task, TaskMetric, bincount

# A norm below this counts as zero when normalising a prediction: a zero prediction gets cos = 0 (loss 1,
# angle 90 degrees) and a bounded gradient (at most ~1/NORM_EPS) instead of NaN.
NORM_EPS = 1e-6
WITHIN = {"within_11.25": 11.25, "within_22.5": 22.5, "within_30": 30.0}


class NormalTask(Task):
    """Surface-normal spec. Targets: float [N, 3, H, W]; all-zero vectors mark invalid pixels.

    Loss per sample: mean over valid pixels of 1 - cos(pred, target), both L2-normalised (raw head output
    need not be unit length).

    Metrics over all valid pixels of the dataset: `mean_angle`, `median_angle` (degrees),
    `within_11.25`, `within_22.5`, `within_30` (percent of pixels with an angle below the threshold), and,
    for Taskonomy, `cosine_similarity` (mean cosine). The median comes from a histogram state with
    `median_bin_deg`-wide bins (interpolated within its bin) so that it syncs across processes by summing;
    it is exact to within one bin width.
    """

    metric_directions = {
        "mean_angle": False,
        "median_angle": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
        "cosine_similarity": True,
    }
    default_metrics = ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30")
    loss_name = "cosine"

    def __init__(
        self,
        *,
        median_bin_deg: float = 0.01,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        if not 0 < median_bin_deg <= 180:
            raise ValueError(f"task 'normal': median_bin_deg must be in (0, 180], got {median_bin_deg!r}")
        super().__init__("normal", 3, target_channels=3, resize=resize, metrics=metrics)
        self.median_bin_deg = float(median_bin_deg)

    def _extra_config(self) -> dict[str, Any]:
        return {"median_bin_deg": self.median_bin_deg}

    def _valid(self, target: Tensor) -> Tensor:
        return (target != 0).any(dim=1)

    def _pixel_loss(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        cos = (unit(pred) * unit(target)).sum(dim=1)
        return 1.0 - cos, self._valid(target).float()

    def _make_metric(self, **metric_kwargs: Any) -> NormalMetric:
        return NormalMetric(self, **metric_kwargs)


def unit(v: Tensor) -> Tensor:
    """L2-normalise along dim 1; vectors shorter than NORM_EPS are scaled, not blown up."""
    return F.normalize(v, dim=1, eps=NORM_EPS)


def angle_deg(pred: Tensor, target: Tensor) -> Tensor:
    """Angle in degrees between vectors along dim 1 ([N, 3, ...] -> [N, ...]).

    atan2(|a x b|, a . b) stays accurate near 0 and 180 degrees, where acos of a rounded cosine does not.
    A zero prediction has no direction; it gets 90 degrees (cos = 0, as in the loss).
    """
    a, b = unit(pred), unit(target)
    cross = torch.linalg.vector_norm(torch.linalg.cross(a, b, dim=1), dim=1)
    dot = (a * b).sum(dim=1)
    angle = torch.rad2deg(torch.atan2(cross, dot))
    no_direction = (pred == 0).all(dim=1)
    return torch.where(no_direction, torch.full_like(angle, 90.0), angle)


class NormalMetric(TaskMetric):
    task_spec: NormalTask
    angle_sum: Tensor
    cos_sum: Tensor
    within_hits: Tensor
    hist: Tensor
    count: Tensor

    def __init__(self, task: NormalTask, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        self.num_bins = int(round(180.0 / task.median_bin_deg))
        self._add_sum("angle_sum")
        self._add_sum("cos_sum")
        self._add_sum("within_hits", len(WITHIN), dtype=torch.long)
        self._add_sum("hist", self.num_bins, dtype=torch.long)
        self._add_sum("count", dtype=torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = self.task_spec._metric_inputs(pred, target)
        valid = self.task_spec._valid(target)
        angle = angle_deg(pred, target)[valid]
        self.angle_sum += angle.sum(dtype=torch.float64)
        self.cos_sum += (unit(pred) * unit(target)).sum(dim=1)[valid].sum(dtype=torch.float64)
        limits = torch.tensor(list(WITHIN.values()), device=angle.device, dtype=angle.dtype)
        self.within_hits += (angle.unsqueeze(0) < limits.unsqueeze(1)).sum(dim=1)
        bins = torch.floor(angle / self.task_spec.median_bin_deg).long().clamp(0, self.num_bins - 1)
        self.hist += bincount(bins, self.num_bins)
        self.count += valid.sum()

    def _median(self) -> Tensor:
        """Median angle from the histogram, linearly interpolated inside the bin holding the middle rank."""
        hist = self.hist.double()
        total = hist.sum()
        if total == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=hist.device)
        cum = hist.cumsum(0)
        half = total / 2
        k = torch.searchsorted(cum, half.reshape(1)).clamp_max(self.num_bins - 1)[0]
        before = cum[k] - hist[k]
        return (k + (half - before) / hist[k]) * self.task_spec.median_bin_deg

    def _compute_all(self) -> dict[str, Tensor]:
        n = self.count.double()
        pct = 100.0 * self.within_hits.double() / n
        out = {
            "mean_angle": self.angle_sum / n,
            "median_angle": self._median(),
            "cosine_similarity": self.cos_sum / n,
        }
        out.update({name: pct[i] for i, name in enumerate(WITHIN)})
        return out
