"""Saliency (PASCAL-Context's distilled saliency): balanced BCE, max F-measure and mIoU over thresholds."""

from __future__ import annotations

from collections.abc import Sequence

from mtl_robust.tasks.binary import BinaryTask


class SaliencyTask(BinaryTask):
    """Salient-object segmentation, see `mtl_robust.tasks.binary` for targets, loss and the threshold grid.

    Metrics (pooled over every valid pixel of the data set, best threshold of the grid):
    `max_f`, the F-measure with beta^2 = 0.3 that the saliency literature and MTI-Net/ATRC/InvPT report
    as maxF; `miou`, the mean of the foreground and background IoU (the saliency mIoU some of those
    papers report instead); `bce`, the pooled loss. The original evaluation averages precision and
    recall per image before forming F; pooling over pixels weighs large images more.
    """

    metric_directions = {"max_f": True, "miou": True, "bce": False}
    default_metrics = ("max_f", "miou")
    beta_sq = 0.3

    def __init__(
        self,
        pos_weight: float | None = None,
        ignore_value: float = 255.0,
        num_thresholds: int = 100,
        *,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        super().__init__("saliency", pos_weight, ignore_value, num_thresholds, resize=resize, metrics=metrics)
