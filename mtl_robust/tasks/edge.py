"""Edge detection (PASCAL-Context's semantic boundaries): weighted BCE and a pixel-exact F-measure."""

from __future__ import annotations

from collections.abc import Sequence

from mtl_robust.tasks.binary import BinaryTask


class EdgeTask(BinaryTask):
    """Binary edge map, see `mtl_robust.tasks.binary` for targets, loss and the threshold grid.

    Not the Taskonomy `edges` regression task: this one predicts a boundary logit.

    Loss: BCE with positives weighted 0.95 and negatives 0.05 (MTI-Net/ATRC/InvPT's edge loss).

    Metrics: `f_measure`, the best F1 (beta = 1) over the threshold grid with precision and recall pooled
    over the data set and a prediction matching a boundary pixel only at the very same pixel; `bce`, the
    pooled loss (what those code bases track on the validation set). Both differ from the BSDS odsF that
    the papers report: that protocol thins the predicted map by non-maximum suppression and matches
    predicted and true boundary pixels within a distance tolerance (0.0075 of the image diagonal), which
    is forgiving of one- or two-pixel offsets; the exact-pixel F here is lower and only comparable within
    this framework (clean vs attacked, model vs model).
    """

    metric_directions = {"f_measure": True, "bce": False}
    default_metrics = ("f_measure", "bce")
    beta_sq = 1.0

    def __init__(
        self,
        pos_weight: float | None = 0.95,
        ignore_value: float = 255.0,
        num_thresholds: int = 100,
        *,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        super().__init__("edge", pos_weight, ignore_value, num_thresholds, resize=resize, metrics=metrics)
