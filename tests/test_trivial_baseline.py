"""The trivial predictor: constants fitted on training targets, their metrics, and the undertrained flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtl_robust.evaluation.trivial_baseline import baseline_for_rows, constant_metrics, fit_constants
from mtl_robust.report.flags import model_flags, trivial_gains, undertrained_flags
from mtl_robust.report.records import Record
from mtl_robust.tasks import build_task

TASKS = {
    "seg": build_task("seg", num_classes=4),
    "depth": build_task("depth"),
    "normal": build_task("normal"),
}


def batches(seed: int, count: int = 3) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        seg = torch.where(
            torch.rand(2, 8, 8, generator=g) < 0.7, 2, torch.randint(0, 4, (2, 8, 8), generator=g)
        )
        normal = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1) + 0.1 * torch.randn(2, 3, 8, 8, generator=g)
        targets = {"seg": seg, "depth": 2.0 + torch.rand(2, 1, 8, 8, generator=g), "normal": normal}
        out.append((torch.zeros(2, 3, 8, 8), targets))
    return out


def test_constants_are_the_class_prior_the_mean_depth_and_the_mean_normal() -> None:
    constants = fit_constants(TASKS, batches(0))
    assert int(constants["seg"].argmax()) == 2  # the majority class
    assert torch.exp(constants["seg"]).sum() == pytest.approx(1.0)
    assert float(constants["depth"][0]) == pytest.approx(2.5, abs=0.05)
    assert float(constants["normal"][2]) > 0.95
    metrics = constant_metrics(TASKS, constants, batches(1))
    assert metrics["seg"]["pixel_acc"] == pytest.approx(0.775, abs=0.08)  # 0.7 + 0.3 / 4
    assert metrics["normal"]["mean_angle"] < 15


def test_baseline_is_cached_and_flags_a_model_no_better_than_trivial(tmp_path: Path) -> None:
    depth_only = {"depth": TASKS["depth"]}
    cache = tmp_path / "trivial.json"
    stored = baseline_for_rows(depth_only, lambda: batches(0), lambda: batches(1), cache)
    assert cache.is_file() and baseline_for_rows(depth_only, list, list, cache) == stored
    trivial = stored["trivial_baseline"]["depth"]["metrics"]

    def record(abs_err: float) -> Record:
        clean = {"depth": {**trivial, "abs_err": abs_err, "rel_err": trivial["rel_err"]}}
        results = {"clean": clean, **stored}
        return Record("s", "k", "ok", 0.0, {}, results, "", Path("."))

    same = record(trivial["abs_err"])
    assert undertrained_flags(same) == ["undertrained:depth"] and "undertrained:depth" in model_flags(same)
    good = record(0.1 * trivial["abs_err"])  # 90 % lower error, other metrics equal: mean gain 18 %
    assert trivial_gains(good)["depth"] > 0.1 and undertrained_flags(good) == []
