"""The trivial predictor of each task, fitted on the training targets, and its metrics on evaluated images.

A model whose clean metrics are not clearly better than a constant prediction has learned (almost)
nothing, and "robust" then only means "has nothing to lose". The constant per task is:

* segmentation: the training class frequencies as class probabilities (its argmax is the majority class,
  its cross-entropy that of the class prior);
* surface normals: the mean training normal (the metric normalises it);
* depth and other dense regression: the mean training target per channel.

The metrics of that constant on the evaluated images are stored with every row
(`results["trivial_baseline"]`); the report flags `undertrained:<task>` where the model is not clearly
better (`report/flags.py`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtl_robust.files import atomic_write_text
from mtl_robust.tasks import Task
from mtl_robust.tasks.normal import NormalTask, unit
from mtl_robust.tasks.segmentation import SegmentationTask

Batch = tuple[Tensor, Mapping[str, Tensor]]


def fit_constants(
    tasks: Mapping[str, Task], batches: Iterable[Batch], max_batches: int | None = None
) -> dict[str, Tensor]:
    """Per task the constant prediction [out_channels] (float64) from the training targets."""
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for _, targets in itertools.islice(batches, max_batches):
        for name, task in tasks.items():
            total, count = _sums(task, targets[name])
            sums[name] = sums[name] + total if name in sums else total
            counts[name] = counts[name] + count if name in counts else count
    if not sums:
        raise ValueError("the trivial predictor needs at least one training batch")
    out = {}
    for name, task in tasks.items():
        if isinstance(task, SegmentationTask):
            freq = sums[name] / sums[name].sum().clamp_min(1)
            out[name] = torch.log(freq.clamp_min(1e-12))  # logits whose softmax is the class prior
        else:
            out[name] = sums[name] / counts[name].clamp_min(1)
    return out


def _sums(task: Task, target: Tensor) -> tuple[Tensor, Tensor]:
    """(sum per output channel, valid count) of one batch of targets; class counts for segmentation."""
    prepared = task._prepare_target(target)
    valid = task._valid(prepared)
    if isinstance(task, SegmentationTask):
        counts = torch.bincount(prepared[valid].flatten(), minlength=task.num_classes).double()
        return counts.cpu(), valid.sum().double().cpu()
    values = unit(prepared) if isinstance(task, NormalTask) else prepared
    mask = valid.unsqueeze(1).to(values.dtype)
    return (values * mask).double().sum(dim=(0, 2, 3)).cpu(), valid.sum().double().cpu()


def constant_metrics(
    tasks: Mapping[str, Task], constants: Mapping[str, Tensor], batches: Iterable[Batch]
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of the constant prediction on `batches`."""
    metrics = {name: task.metric() for name, task in tasks.items()}
    for _, targets in batches:
        for name in tasks:
            target = targets[name]
            n, (h, w) = target.shape[0], target.shape[-2:]
            pred = constants[name].float().view(1, -1, 1, 1).expand(n, -1, h, w).to(target.device)
            metrics[name].update(pred.contiguous(), target)
    return {name: {k: float(v) for k, v in m.compute().items()} for name, m in metrics.items()}


def trivial_baseline(
    tasks: Mapping[str, Task],
    train_batches: Callable[[], Iterable[Batch]],
    eval_batches: Callable[[], Iterable[Batch]],
    max_train_batches: int | None = None,
) -> dict[str, Any]:
    """`{task: {"metrics": {...}, "higher_is_better": {...}}}` of the trivial predictor, fitted on the
    training batches and scored on the evaluated ones: what every row stores as `trivial_baseline`."""
    constants = fit_constants(tasks, train_batches(), max_train_batches)
    metrics = constant_metrics(tasks, constants, eval_batches())
    return {
        name: {"metrics": metrics[name], "higher_is_better": dict(task.higher_is_better)}
        for name, task in tasks.items()
    }


# Training batches the constants are fitted on: means and class frequencies settle long before that.
TRAIN_BATCHES = 50


def baseline_for_rows(
    tasks: Mapping[str, Task],
    train_batches: Callable[[], Iterable[Batch]],
    eval_batches: Callable[[], Iterable[Batch]],
    cache_file: Path,
) -> dict[str, Any]:
    """`{"trivial_baseline": ...}` for every row of a model, computed once per training and evaluated
    image set and reused from `cache_file`."""
    if cache_file.is_file():
        return {"trivial_baseline": json.loads(cache_file.read_text())}
    baseline = trivial_baseline(tasks, train_batches, eval_batches, TRAIN_BATCHES)
    atomic_write_text(cache_file, json.dumps(baseline, indent=2))
    return {"trivial_baseline": baseline}
