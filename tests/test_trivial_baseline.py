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
    one_metric = record(0.1 * trivial["abs_err"])  # 90 % lower abs error, rel error equal to trivial's
    assert trivial_gains(one_metric)["depth"] > 0.1 and undertrained_flags(one_metric) == [
        "undertrained:depth"
    ]
    good = Record(
        "s",
        "k",
        "ok",
        0.0,
        {},
        {
            "clean": {
                "depth": {**trivial, "abs_err": 0.5 * trivial["abs_err"], "rel_err": 0.5 * trivial["rel_err"]}
            }
        }
        | stored,
        "",
        Path("."),
    )
    # the deltas of the mean depth are 100 % on these easy targets: no room, not counted
    assert {trivial[f"delta{k}"] for k in (1, 2, 3)} == {100.0}
    assert undertrained_flags(good) == []


def _seg_record(clean: dict, trivial: dict) -> Record:
    higher = {"miou": True, "pixel_acc": True, "err": False}
    baseline = {"seg": {"metrics": trivial, "higher_is_better": higher}}
    return Record(
        "s", "k", "ok", 0.0, {}, {"clean": {"seg": clean}, "trivial_baseline": baseline}, "", Path(".")
    )


def test_a_trivial_predictor_with_one_lucky_metric_is_still_undertrained() -> None:
    """mIoU 0.023 -> 0.04 is a 74 % gain, but pixel accuracy and cross-entropy equal to the class prior's
    say the model predicts the prior: the mean gain (25 %) alone passed such a model."""
    trivial = {"miou": 0.023, "pixel_acc": 0.31, "err": 2.1}
    lucky = _seg_record({"miou": 0.04, "pixel_acc": 0.31, "err": 2.1}, trivial)
    assert trivial_gains(lucky)["seg"] == pytest.approx(0.74 / 3, abs=0.01)
    assert undertrained_flags(lucky) == ["undertrained:seg"]
    learned = _seg_record({"miou": 0.20, "pixel_acc": 0.55, "err": 1.3}, trivial)
    assert undertrained_flags(learned) == []


def test_normals_better_only_on_a_near_zero_share_are_undertrained() -> None:
    higher = {"mean_angle": False, "median_angle": False, "11.25": True, "22.5": True, "30": True}
    trivial = {"mean_angle": 40.0, "median_angle": 38.0, "11.25": 1.0, "22.5": 10.0, "30": 30.0}
    clean = {**trivial, "11.25": 2.0}  # within 11.25 deg from 1 % to 2 %: +100 % on one metric
    baseline = {"normal": {"metrics": trivial, "higher_is_better": higher}}
    record = Record(
        "s", "k", "ok", 0.0, {}, {"clean": {"normal": clean}, "trivial_baseline": baseline}, "", Path(".")
    )
    assert undertrained_flags(record) == ["undertrained:normal"]
