"""Per-image statistics: they recompute every metric on any image subset, and their side files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_robust.evaluation.per_image import (
    ANGLE_BIN_DEG,
    PerImageError,
    load_stats,
    metrics_from_stats,
    per_image_stats,
    save_stats,
    subset_metrics,
)
from mtl_robust.evaluation.stats import batched_metrics
from mtl_robust.tasks import build_task

torch.set_num_threads(1)
N, H, W = 12, 20, 24


def _batch(task_name: str, generator: torch.Generator):
    if task_name == "seg":
        target = torch.randint(0, 5, (N, H, W), generator=generator)
        target[:, :3] = 255
        target[1] = 255  # an image without one labelled pixel
        pred = torch.randn(N, 5, H // 2, W // 2, generator=generator)
    elif task_name == "depth":
        target = torch.rand(N, 1, H, W, generator=generator) + 0.5
        target[:, :, :4] = 0
        pred = target[:, :, ::2, ::2] + 0.3 * torch.randn(N, 1, H // 2, W // 2, generator=generator)
        pred[0, 0, 0] = -1.0  # non-positive predictions fail every delta threshold
    elif task_name == "normal":
        target = torch.nn.functional.normalize(torch.randn(N, 3, H, W, generator=generator), dim=1)
        target[:, :, :, :5] = 0
        pred = target[:, :, ::2, ::2] + 0.6 * torch.randn(N, 3, H // 2, W // 2, generator=generator)
    else:
        target = torch.rand(N, 1, H, W, generator=generator)
        pred = torch.rand(N, 1, H // 2, W // 2, generator=generator)
    return pred, target


TASKS = {
    "seg": lambda: build_task("seg", num_classes=5, metrics=["miou", "pixel_acc", "err"]),
    "seg_faithful": lambda: build_task("seg", num_classes=5, miou_mode="faithful"),
    "depth": lambda: build_task("depth"),
    "normal": lambda: build_task("normal", metrics=list(build_task("normal").metric_directions)),
    "edges": lambda: build_task("edges"),
}


@pytest.mark.parametrize("name", list(TASKS))
def test_summed_per_image_statistics_reproduce_the_metric_on_any_subset(name: str) -> None:
    task = TASKS[name]()
    pred, target = _batch(name.split("_")[0], torch.Generator().manual_seed(1))
    stats = per_image_stats(task, pred, target)
    assert all(len(v) == N for v in stats.values())
    for index in (np.arange(N), np.array([0, 3, 3, 7])):  # all, and a subset with a repeat
        metric = task.metric()
        for i in index:  # the dataset metric over those images (a repeated image counts twice)
            metric.update(pred[i : i + 1], target[i : i + 1])
        expected = {k: float(v) for k, v in metric.compute().items()}
        got = subset_metrics({name: task}, {name: stats}, index)[name]
        for key, value in expected.items():
            # The median comes from ANGLE_BIN_DEG bins instead of 0.01: exact up to interpolation.
            tol = ANGLE_BIN_DEG / 2 if key == "median_angle" else 1e-5 * max(1.0, abs(value))
            assert got[key] == pytest.approx(value, abs=tol), key


@pytest.mark.parametrize("name", list(TASKS))
def test_batched_replicate_metrics_equal_the_metric_compute(name: str) -> None:
    task = TASKS[name]()
    pred, target = _batch(name.split("_")[0], torch.Generator().manual_seed(2))
    stats = per_image_stats(task, pred, target)
    weights = np.random.default_rng(0).integers(0, 3, size=(4, N)).astype(float)
    summed = {s: weights @ v.reshape(N, -1).astype(float) for s, v in stats.items()}
    batched = batched_metrics(task, {s: v.reshape(4, *stats[s].shape[1:]) for s, v in summed.items()})
    for b in range(4):
        one = metrics_from_stats(task, {s: v[b] for s, v in summed.items()})
        for key, value in one.items():
            assert batched[key][b] == pytest.approx(value, rel=1e-6, nan_ok=True), key


def test_side_file_round_trip_is_exact_and_sparse(tmp_path: Path) -> None:
    tasks = {"seg": build_task("seg", num_classes=40), "normal": build_task("normal")}
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 40, (N, H, W), generator=g)
    stats = {
        "seg": per_image_stats(tasks["seg"], torch.randn(N, 40, H, W, generator=g), target),
        "normal": per_image_stats(tasks["normal"], *_batch("normal", g)),
    }
    path = save_stats(tmp_path / "cell.npz", stats, tasks)
    loaded, header = load_stats(path)
    assert header["angle_bin_deg"] == ANGLE_BIN_DEG
    for task, states in stats.items():
        for name, value in states.items():
            assert loaded[task][name].dtype == value.dtype and np.array_equal(loaded[task][name], value)
    dense_bytes = sum(v.nbytes for states in stats.values() for v in states.values())
    assert path.stat().st_size < dense_bytes / 4  # 1600 confusion cells per image, mostly zero


def test_missing_or_truncated_side_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(PerImageError, match="gone.npz is missing"):
        load_stats(tmp_path / "gone.npz")
    tasks = {"depth": build_task("depth")}
    path = save_stats(
        tmp_path / "cell.npz",
        {"depth": per_image_stats(tasks["depth"], *_batch("depth", torch.Generator()))},
        tasks,
    )
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PerImageError, match="cell.npz is truncated or damaged"):
        load_stats(path)
