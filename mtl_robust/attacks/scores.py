"""Per-image scores that pick an ensemble's worst case: the paper's relative change, one image at a time.

A task's per-image metrics are the task's own dataset-level metric computed on that image alone
(`task.metric()` updated with one image): for segmentation the mIoU over the classes that image's target
or prediction contains and its pixel accuracy; for depth its absolute and relative errors over its valid
pixels; for normals the mean and median angle and the shares within 11.25/22.5/30 degrees over its valid
pixels. The per-image change of a task is the mean over its metrics of s * (adv - clean) / |clean|
(s = -1 for lower-is-better), the joint change the mean over tasks: the same measure the rows report for
a whole split, negative = worse. Metrics undefined on an image (clean value 0, no valid pixel) are skipped;
an image with no defined metric for a task scores NaN there, which never wins a selection.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

PerImage = dict[str, dict[str, Tensor]]  # task -> metric -> [N]


def per_image_metrics(
    tasks: Mapping[str, object], preds: Mapping[str, Tensor], targets: Mapping[str, Tensor]
) -> PerImage:
    """task -> metric -> Tensor[N] (float64, CPU), each image scored by the task's own metric alone."""
    out: PerImage = {}
    for name, task in tasks.items():
        pred, target = preds[name].detach(), targets[name]
        values: dict[str, list[float]] = {m: [] for m in task.higher_is_better}
        for i in range(pred.shape[0]):
            metric = task.metric()
            metric.update(pred[i : i + 1].float().cpu(), target[i : i + 1].cpu())
            computed = metric.compute()
            for m in values:
                values[m].append(float(computed[m]))
        out[name] = {m: torch.tensor(v, dtype=torch.float64) for m, v in values.items()}
    return out


def per_image_change(
    clean: PerImage, adv: PerImage, higher_is_better: Mapping[str, Mapping[str, bool]]
) -> dict[str, Tensor]:
    """task -> Tensor[N]: mean over the task's defined metrics of the signed relative change."""
    out = {}
    for task, directions in higher_is_better.items():
        changes = []
        for metric, higher in directions.items():
            c, a = clean[task][metric], adv[task][metric]
            sign = 1.0 if higher else -1.0
            ok = torch.isfinite(c) & torch.isfinite(a) & (c != 0)
            changes.append(torch.where(ok, sign * (a - c) / c.abs().clamp_min(1e-300), torch.nan))
        out[task] = torch.stack(changes).nanmean(dim=0)
    return out


def joint_change(per_task: Mapping[str, Tensor]) -> Tensor:
    """[N]: mean over tasks of the per-image task change (NaN tasks skipped): the image's paper measure."""
    return torch.stack(list(per_task.values())).nanmean(dim=0)
