"""The interval method is chosen by this simulation: coverage of the true measure at nominal 95 % and the
false-verdict rate under a true null, through the project's own `Bootstrap` (docs/statistics.md prints
the table; `python -m tests.test_interval_coverage` regenerates it).

Simulation model: one task with a lower-is-better error metric on N images; the clean error of every image
is 1, so the measure of a seed is minus its mean adversarial excess error. The excess of image i under
seed s is mu + b_s + e_i + u_si: b_s ~ N(0, SEED_SD) is the training-seed effect, e_i ~ N(0, IMAGE_SD)
the image difficulty shared by every seed (the test set is one draw of images), u_si ~ N(0, NOISE_SD) the
seed-image interaction. The true measure is -mu; with N = 40 the image noise on a seed's measure is about
0.02 and the seed spread 0.1. Under the null, two "layouts" are two independent sets of seeds from the
same distribution, scored on the same images.
"""

from __future__ import annotations

import numpy as np
import pytest

from mtl_robust.evaluation.stats import Bootstrap, SeedCell
from mtl_robust.tasks import build_task

TASKS = {"edges": build_task("edges")}
NUM_IMAGES = 40
SEED_SD, IMAGE_SD, NOISE_SD = 0.1, 0.02 * NUM_IMAGES**0.5, 0.05
MU = 0.3
RUNS, REPLICATES = 300, 200
MIN_SEEDS = 3  # the report's default minimum for verdicts about training procedures


def _cells(rng: np.random.Generator, num_seeds: int, image_effect: np.ndarray) -> list[SeedCell]:
    cells = []
    for s in range(num_seeds):
        excess = MU + rng.normal(0, SEED_SD) + image_effect + rng.normal(0, NOISE_SD, NUM_IMAGES)
        ones = np.ones(NUM_IMAGES)
        clean = {"edges": {"abs_sum": ones, "count": ones.astype(np.int64)}}
        adv = {"edges": {"abs_sum": 1.0 + excess, "count": ones.astype(np.int64)}}
        cells.append(SeedCell(s, clean, adv))
    return cells


def simulate(num_seeds: int, interval: str, runs: int = RUNS) -> tuple[float, float]:
    """(coverage of the true measure, share of null comparisons called significant)."""
    rng = np.random.default_rng((num_seeds, 7))
    covered = false = 0
    for run in range(runs):
        image_effect = rng.normal(0, IMAGE_SD, NUM_IMAGES)
        boot = Bootstrap(REPLICATES, seed=run, interval=interval)
        a, b = _cells(rng, num_seeds, image_effect), _cells(rng, num_seeds, image_effect)
        est = boot.estimate(a, TASKS)
        covered += est.low <= -MU <= est.high
        false += boot.paired(a, b, TASKS).significant
    return covered / runs, false / runs


def coverage_table(seeds: tuple[int, ...] = (1, 2, 3, 5, 10)) -> list[tuple]:
    rows = []
    for s in seeds:
        old_cov, old_false = simulate(s, "percentile")
        new_cov, new_false = simulate(s, "t")
        rows.append((s, old_cov, new_cov, old_false, new_false, new_false if s >= MIN_SEEDS else 0.0))
    return rows


@pytest.mark.parametrize("num_seeds", [2, 3, 5, 10])
def test_t_interval_covers_the_truth_at_nominal_level(num_seeds: int) -> None:
    coverage, false_rate = simulate(num_seeds, "t", runs=200)
    assert coverage >= 0.90
    assert false_rate <= 0.10  # nominal 5 %; 200 runs leave some room


def test_percentile_bootstrap_undercovers_with_few_seeds() -> None:
    """Why it was replaced: with 2 seeds its '95 %' interval misses the truth far too often."""
    coverage, false_rate = simulate(2, "percentile", runs=200)
    assert coverage < 0.85 and false_rate > 0.15


if __name__ == "__main__":
    print(
        "| seeds | coverage, percentile (old) | coverage, t (new) | null 'significant', old | new | "
        f"new with the {MIN_SEEDS}-seed rule |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for row in coverage_table():
        print("| {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(*row))
