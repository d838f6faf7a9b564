"""Per-image sufficient statistics: what every reported metric can be recomputed from, on any image subset.

Every task metric keeps only sum-reduced states (confusion counts, error sums, pixel counts, an angle
histogram), so the metric of a set of images is the metric of the summed states of its images. This module
computes those states image by image (`per_image_stats`), recomputes metrics from summed states
(`metrics_from_stats`), and stores them in a compact side file per evaluated cell (`save_stats`,
`load_stats`). The file format is described in docs/per_image_stats.md.

One state is coarsened: the surface-normal angle histogram, kept at `ANGLE_BIN_DEG` instead of the task's
0.01 degree median bins (see the docs for why that resolution).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl_robust.files import atomic_path
from mtl_robust.tasks import Task, build_task
from mtl_robust.tasks.base import bincount
from mtl_robust.tasks.depth import DELTA_BASE, DepthTask
from mtl_robust.tasks.normal import WITHIN, NormalTask, angle_deg, unit
from mtl_robust.tasks.regression import RegressionTask
from mtl_robust.tasks.segmentation import SegmentationTask

FORMAT_VERSION = 1
# Median angle from the summed per-image histograms, interpolated inside a bin: 0.5 degree bins keep it
# within a few hundredths of a degree of the 0.01 degree median on smooth angle distributions (measured in
# the docs), at 360 counts per image instead of 18000.
ANGLE_BIN_DEG = 0.5
# A state with more columns than this is stored as sparse (row, column, value) triplets.
SPARSE_MIN_COLUMNS = 32

Stats = dict[str, dict[str, np.ndarray]]  # task -> state name -> [N, ...] per image


class PerImageError(ValueError):
    """A per-image side file that is missing, truncated or not in this format; the message names it."""


def stats_task(task: Task) -> Task:
    """The task whose metric states are stored: the same task, with the coarse angle histogram."""
    if isinstance(task, NormalTask) and task.median_bin_deg != ANGLE_BIN_DEG:
        return build_task(**{**task.config(), "median_bin_deg": ANGLE_BIN_DEG})
    return task


def per_image_stats(task: Task, pred: Tensor, target: Tensor) -> dict[str, np.ndarray]:
    """States of `task`'s metric for each image of a batch: {state: array [N, ...]} (numpy, on CPU).

    The built-in tasks are computed for the whole batch at once, with the same formulas as their metric's
    `update`; any other task runs its own metric update one image at a time (slower, but exact).
    """
    spec = stats_task(task)
    with torch.no_grad():
        for kind, fn in _VECTORISED:
            if type(spec) is kind:
                return {k: v.cpu().numpy() for k, v in fn(spec, pred, target).items()}
    return _stats_by_image(spec, pred, target)


def _per_image_bincount(image: Tensor, index: Tensor, n: int, length: int) -> Tensor:
    return bincount(image * length + index, n * length).view(n, length)


def _segmentation(task: SegmentationTask, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    pred, target = task._metric_inputs(pred, target)
    n, c = pred.shape[0], task.num_classes
    valid = task._valid(target)
    image = torch.arange(n, device=pred.device).view(n, 1, 1).expand_as(target)[valid]
    cells = target[valid] * c + pred.argmax(dim=1)[valid]
    out = {"confmat": _per_image_bincount(image, cells, n, c * c)}
    if "err" in task.metrics:
        ce, weight = task.pixel_ce(pred, target)
        out["ce_sum"] = (ce * weight).double().sum(dim=(1, 2))
        out["weight_sum"] = weight.double().sum(dim=(1, 2))
    else:
        out["ce_sum"] = torch.zeros(n, dtype=torch.float64)
        out["weight_sum"] = torch.zeros(n, dtype=torch.float64)
    return out


def _depth(task: DepthTask, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    pred, target = task._metric_inputs(pred, target)
    valid = task._valid(target)
    p, g = pred[:, 0], target[:, 0]
    g_safe = torch.where(valid, g, torch.ones_like(g))
    diff = torch.where(valid, (p - g).abs(), torch.zeros_like(p))
    positive = p > 0
    p_safe = torch.where(positive, p, torch.ones_like(p))
    ratio = torch.where(
        positive, torch.maximum(p_safe / g_safe, g_safe / p_safe), torch.full_like(p, math.inf)
    )
    thresholds = DELTA_BASE ** torch.arange(1, 4, device=p.device, dtype=torch.float64)
    hits = (ratio.double().unsqueeze(-1) < thresholds) & valid.unsqueeze(-1)
    return {
        "abs_sum": diff.double().sum(dim=(1, 2)),
        "rel_sum": (diff / g_safe).double().sum(dim=(1, 2)),
        "delta_hits": hits.sum(dim=(1, 2)),
        "count": valid.sum(dim=(1, 2)),
    }


def _normal(task: NormalTask, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    pred, target = task._metric_inputs(pred, target)
    n = pred.shape[0]
    valid = task._valid(target)
    angle = angle_deg(pred, target)
    cos = (unit(pred) * unit(target)).sum(dim=1)
    zero = torch.zeros_like(angle)
    limits = torch.tensor(list(WITHIN.values()), device=angle.device, dtype=angle.dtype)
    num_bins = int(round(180.0 / task.median_bin_deg))
    bins = torch.floor(angle / task.median_bin_deg).long().clamp(0, num_bins - 1)
    image = torch.arange(n, device=pred.device).view(n, 1, 1).expand_as(bins)
    return {
        "angle_sum": torch.where(valid, angle, zero).double().sum(dim=(1, 2)),
        "cos_sum": torch.where(valid, cos, zero).double().sum(dim=(1, 2)),
        "within_hits": ((angle.unsqueeze(-1) < limits) & valid.unsqueeze(-1)).sum(dim=(1, 2)),
        "hist": _per_image_bincount(image[valid], bins[valid], n, num_bins),
        "count": valid.sum(dim=(1, 2)),
    }


def _regression(task: RegressionTask, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    pred, target = task._metric_inputs(pred, target)
    valid = task._valid(target)
    per_pixel = (pred - target).abs().mean(dim=1)
    return {
        "abs_sum": torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).double().sum(dim=(1, 2)),
        "count": valid.sum(dim=(1, 2)),
    }


_VECTORISED = (
    (SegmentationTask, _segmentation),
    (DepthTask, _depth),
    (NormalTask, _normal),
    (RegressionTask, _regression),
)


def _stats_by_image(spec: Task, pred: Tensor, target: Tensor) -> dict[str, np.ndarray]:
    metric = spec.metric().to(pred.device)
    rows: dict[str, list[np.ndarray]] = {}
    for i in range(pred.shape[0]):
        metric.reset()
        metric.update(pred[i : i + 1], target[i : i + 1])
        for name, value in metric.metric_state.items():
            rows.setdefault(name, []).append(value.detach().cpu().numpy())
    return {name: np.stack(values) for name, values in rows.items()}


def metrics_from_stats(task: Task, states: Mapping[str, np.ndarray | Tensor]) -> dict[str, float]:
    """The task's metrics from states summed over images (one entry per state, without the image axis)."""
    spec = stats_task(task)
    metric = spec.metric()
    for name, default in metric.metric_state.items():
        if name not in states:
            raise KeyError(f"task {task.name!r}: per-image statistics lack the state {name!r}")
        value = torch.as_tensor(np.asarray(states[name]), dtype=default.dtype).reshape(default.shape)
        setattr(metric, name, value)
    metric._update_count = 1  # computing from loaded states: no update() call happened
    return {k: float(v) for k, v in metric.compute().items()}


def subset_metrics(tasks: Mapping[str, Task], stats: Stats, index: np.ndarray | None = None) -> dict:
    """{task: {metric: value}} over the images `index` (all images when None; repeats count repeatedly)."""
    out = {}
    for name, task in tasks.items():
        states = stats[name]
        summed = {s: (v if index is None else v[index]).sum(axis=0) for s, v in states.items()}
        out[name] = metrics_from_stats(task, summed)
    return out


def concat_stats(parts: list[Stats]) -> Stats:
    """Batches' statistics joined along the image axis."""
    if not parts:
        return {}
    return {t: {s: np.concatenate([p[t][s] for p in parts]) for s in parts[0][t]} for t in parts[0]}


# ------------------------------------------------------------------------------------------ side files
def _encode(name: str, array: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Dense, or sparse triplets for wide count tables (most confusion cells of an image are 0)."""
    flat = array.reshape(array.shape[0], -1)
    if flat.shape[1] < SPARSE_MIN_COLUMNS:
        out[name] = array
        return
    rows, cols = np.nonzero(flat)
    values = flat[rows, cols]
    out[f"{name}#shape"] = np.asarray(array.shape, dtype=np.int64)
    out[f"{name}#row"] = rows.astype(np.min_scalar_type(max(int(flat.shape[0]) - 1, 0)))
    out[f"{name}#col"] = cols.astype(np.min_scalar_type(max(int(flat.shape[1]) - 1, 0)))
    if np.issubdtype(values.dtype, np.integer) and values.size:
        values = values.astype(np.min_scalar_type(int(values.max())))
    out[f"{name}#val"] = values


def _decode(files: Mapping[str, np.ndarray], name: str, dtype: np.dtype) -> np.ndarray:
    if name in files:
        return files[name]
    shape = tuple(int(s) for s in files[f"{name}#shape"])
    flat = np.zeros((shape[0], int(np.prod(shape[1:], dtype=np.int64))), dtype=dtype)
    flat[files[f"{name}#row"].astype(np.int64), files[f"{name}#col"].astype(np.int64)] = files[f"{name}#val"]
    return flat.reshape(shape)


def save_stats(
    path: str | Path, stats: Stats, tasks: Mapping[str, Task], image_set: str | None = None
) -> Path:
    """Write a cell's per-image statistics as one compressed npz, whole or not at all. `image_set` names
    the evaluated images (the row's `data_id`): comparisons pair only cells of the same image set."""
    arrays: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {"format": FORMAT_VERSION, "angle_bin_deg": ANGLE_BIN_DEG, "tasks": {}}
    if image_set is not None:
        header["image_set"] = str(image_set)
    for task_name, states in stats.items():
        header["tasks"][task_name] = {
            "config": stats_task(tasks[task_name]).config(),
            "states": {s: str(v.dtype) for s, v in states.items()},
        }
        for state, value in states.items():
            _encode(f"{task_name}/{state}", value, arrays)
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_stats(path: str | Path) -> tuple[Stats, dict[str, Any]]:
    """(statistics, header) of a side file; a missing or damaged file raises PerImageError naming it."""
    path = Path(path)
    if not path.is_file():
        raise PerImageError(f"per-image statistics file {path} is missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = {k: npz[k] for k in npz.files}
        header = json.loads(files.pop("header").tobytes().decode())
        if header.get("format") != FORMAT_VERSION:
            raise PerImageError(f"{path}: format {header.get('format')!r}, expected {FORMAT_VERSION}")
        stats = {
            t: {s: _decode(files, f"{t}/{s}", np.dtype(d)) for s, d in info["states"].items()}
            for t, info in header["tasks"].items()
        }
    except PerImageError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation) as err:
        raise PerImageError(f"per-image statistics file {path} is truncated or damaged ({err})") from err
    return stats, header


def header_tasks(header: Mapping[str, Any]) -> dict[str, Task]:
    """The task specs a side file's statistics belong to (rebuilt from its header)."""
    return {name: build_task(**info["config"]) for name, info in header["tasks"].items()}
