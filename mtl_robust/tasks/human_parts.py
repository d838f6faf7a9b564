"""Human-part segmentation (PASCAL-Context): segmentation over 7 labels, background + 6 body parts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mtl_robust.tasks.segmentation import SegmentationTask

HUMAN_PART_NAMES = ("background", "head", "torso", "upper arm", "lower arm", "upper leg", "lower leg")


class HumanPartsTask(SegmentationTask):
    """Cross-entropy, mIoU and pixel accuracy as for `seg`, on the human-part labels.

    The argument is `parts`, not `num_classes`: a data set's `num_classes` (PASCAL-Context's 21 semantic
    classes) is handed to every task that accepts it and must reach only `seg`.
    """

    def __init__(
        self,
        parts: int = len(HUMAN_PART_NAMES),
        ignore_index: int = 255,
        miou_mode: str = "standard",
        *,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        super().__init__(parts, None, ignore_index, miou_mode, resize=resize, metrics=metrics)
        self.name = "human_parts"

    def _extra_config(self) -> dict[str, Any]:
        return {"parts": self.num_classes, "ignore_index": self.ignore_index, "miou_mode": self.miou_mode}
