"""Bootstrap over images and seeds, paired differences, and the verdicts the report prints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl_robust.evaluation.per_image import per_image_stats, subset_metrics
from mtl_robust.evaluation.relative import compare
from mtl_robust.evaluation.stats import Bootstrap, Estimate, SeedCell, replicate_measure
from mtl_robust.report.uncertainty import Comparison
from mtl_robust.tasks import build_task

torch.set_num_threads(1)
N = 40
TASKS = {"depth": build_task("depth"), "edges": build_task("edges")}


def _cell(seed: int, noise: float, clean_noise: float = 0.1) -> SeedCell:
    """Clean and adversarial statistics of N images; `noise` sets how much the 'attack' hurts."""
    g = torch.Generator().manual_seed(100 + seed)
    target = {
        "depth": torch.rand(N, 1, 8, 8, generator=g) + 1.0,
        "edges": torch.rand(N, 1, 8, 8, generator=g),
    }

    def stats(level: float, salt: int) -> dict:
        h = torch.Generator().manual_seed(1000 * seed + salt)
        return {
            t: per_image_stats(task, target[t] + level * torch.randn(target[t].shape, generator=h), target[t])
            for t, task in TASKS.items()
        }

    return SeedCell(seed, stats(clean_noise, 1), stats(noise, 2))


def test_replicate_zero_is_the_full_set_measure() -> None:
    cell = _cell(0, 0.4)
    measure = replicate_measure(cell, TASKS, np.ones((1, N)))[0]
    clean, adv = subset_metrics(TASKS, cell.clean), subset_metrics(TASKS, cell.adv)
    expected = compare(clean, adv, {t: task.higher_is_better for t, task in TASKS.items()}).average
    assert measure == pytest.approx(expected, rel=1e-6)


def test_interval_contains_the_mean_and_widens_with_seed_spread() -> None:
    boot = Bootstrap(400)
    same = [_cell(s, 0.4) for s in range(3)]
    est = boot.estimate(same, TASKS)
    assert est.low < est.mean < est.high and est.num_seeds == 3 and est.num_images == N
    assert est.mean < 0  # the noisier predictions are worse
    spread = [_cell(0, 0.2), _cell(1, 0.4), _cell(2, 0.8)]
    wide = boot.estimate(spread, TASKS)
    assert wide.std > est.std and (wide.high - wide.low) > (est.high - est.low)
    one = boot.estimate(same[:1], TASKS)
    assert math.isnan(one.std) and one.low < one.mean < one.high  # images alone still give an interval


def test_paired_difference_of_a_cell_with_itself_is_exactly_zero_and_not_significant() -> None:
    cells = [_cell(s, 0.4) for s in range(2)]
    est = Bootstrap(200).paired(cells, cells, TASKS)
    assert est.mean == 0 and est.low == 0 and est.high == 0 and not est.significant


def test_paired_difference_finds_a_clearly_stronger_attack() -> None:
    strong = [_cell(s, 1.0) for s in range(3)]
    weak = [_cell(s, 0.3) for s in range(3)]
    est = Bootstrap(300).paired(strong, weak, TASKS)
    assert est.high < 0 and est.significant
    comparison = Comparison("DGBA vs TOTAL", "DGBA", "TOTAL", {}, est, "stronger")
    assert comparison.verdict() == "DGBA stronger"


def test_paired_difference_uses_only_seeds_on_both_sides() -> None:
    a = [_cell(0, 0.5), _cell(1, 0.5)]
    b = [_cell(1, 0.3), _cell(2, 0.3)]
    assert Bootstrap(50).paired(a, b, TASKS).num_seeds == 1
    with pytest.raises(ValueError, match="at least one seed"):
        Bootstrap(50).paired(a[:1], b[1:], TASKS)


@pytest.mark.parametrize(
    ("low", "high", "better", "verdict"),
    [
        (-0.05, 0.01, "stronger", "no significant difference"),  # a CI with 0 inside is never a win
        (-0.05, -0.01, "stronger", "DGBA stronger"),
        (0.01, 0.05, "stronger", "TOTAL stronger"),
        (0.01, 0.05, "robust", "DGBA more robust"),
        (math.nan, math.nan, "stronger", "no CI (no per-image statistics)"),
    ],
)
def test_verdicts(low: float, high: float, better: str, verdict: str) -> None:
    est = Estimate(mean=(low + high) / 2, std=0.0, low=low, high=high, num_seeds=3, num_images=N)
    assert Comparison("DGBA vs TOTAL", "DGBA", "TOTAL", {}, est, better).verdict() == verdict


def test_cells_on_different_images_are_not_compared() -> None:
    a = [_cell(0, 0.5)]
    short = SeedCell(
        0,
        {t: {s: v[:10] for s, v in st.items()} for t, st in a[0].clean.items()},
        {t: {s: v[:10] for s, v in st.items()} for t, st in a[0].adv.items()},
    )
    with pytest.raises(ValueError, match="different numbers of images"):
        Bootstrap(20).paired(a, [short], TASKS)


def test_seeds_of_one_cell_group_together_whatever_their_training_run_measured() -> None:
    from pathlib import Path

    from mtl_robust.report.records import Record
    from mtl_robust.report.seeds import group_key

    def record(seed: int, seconds: float, direction: str = "dgba") -> Record:
        config = {
            "method": "pgd",
            "direction": direction,
            "eps": 8 / 255,
            "layout_name": "all_shared",
            "seed": seed,
            "train_seed": seed,
            "model_id": f"m{seed}",
            "checkpoint": f"/ckpt/{seed}.ckpt",
            "training": {"cost": {"seconds": seconds, "passes_per_iteration": 2.0}},
        }
        return Record("s.jsonl", f"k{seed}{direction}", "ok", 0.0, config, {}, "", Path("."))

    assert group_key(record(0, 144.3)) == group_key(record(1, 151.9)) == group_key(record(2, 139.0))
    assert group_key(record(0, 144.3)) != group_key(record(0, 144.3, direction="total"))


def test_metric_set_is_fixed_by_the_full_set_and_failed_draws_are_counted() -> None:
    """A draw whose clean error is 0 cannot compute the change: it is counted, not averaged over fewer
    metrics, and the tiny clean denominator is flagged."""
    tasks = {"edges": build_task("edges")}
    ones = np.ones(N, dtype=np.int64)
    clean_err = np.zeros(N)
    clean_err[0] = 0.5  # only one image has any clean error
    cell = SeedCell(
        0,
        {"edges": {"abs_sum": clean_err, "count": ones}},
        {"edges": {"abs_sum": clean_err + 1.0, "count": ones}},
    )
    est = Bootstrap(300).estimate([cell], tasks)
    # P(image 0 not drawn) = (1 - 1/N)^N, about 36 % of the draws
    assert 0.25 * est.replicates < est.failed_replicates < 0.5 * est.replicates
    assert est.near_zero == ("edges/err",)
    assert np.isfinite(est.low) and est.low <= est.mean <= est.high


def test_holm_adjustment_is_step_down_and_ignores_rows_without_a_test() -> None:
    from mtl_robust.evaluation.stats import holm

    adjusted = holm([0.01, 0.04, math.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03)  # smallest of 3: x3
    assert adjusted[3] == pytest.approx(0.06)  # second: x2
    assert adjusted[1] == pytest.approx(0.06)  # third: x1, but never below the one before
    assert math.isnan(adjusted[2])
