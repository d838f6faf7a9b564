"""Uncertainty of the paper's measure: mean and spread over seeds, bootstrap CIs, paired comparisons.

The measure of a cell (the average over tasks of the mean relative change of each task's metrics) is a
function of the clean and adversarial metric statistics summed over the evaluated images. One replicate of
the two-level bootstrap draws the seeds with replacement and, independently, the images with replacement
(the same image draw for every seed: all seeds are scored on the same images), recomputes each drawn seed's
measure on the drawn images and averages over the drawn seeds. The 2.5 and 97.5 percentiles of the
replicates give the 95 % interval; it therefore contains both the training-seed spread and the
finite-test-set noise. A paired comparison applies the same draws to both sides and bootstraps their
difference, so image and seed effects common to both cancel. docs/statistics.md explains the method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mtl_robust.evaluation.per_image import Stats, metrics_from_stats, stats_task
from mtl_robust.tasks import Task
from mtl_robust.tasks.depth import DepthTask
from mtl_robust.tasks.normal import WITHIN, NormalTask
from mtl_robust.tasks.regression import RegressionTask
from mtl_robust.tasks.segmentation import SegmentationTask

DEFAULT_REPLICATES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SeedCell:
    """One seed's evaluation of a cell: per-image clean and adversarial statistics of the same images."""

    seed: int
    clean: Stats
    adv: Stats


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds of the measure (fraction, not percent), its spread and its bootstrap interval."""

    mean: float
    std: float  # over seeds (ddof 1); NaN with one seed
    low: float
    high: float
    num_seeds: int
    num_images: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (for a difference: a real win or loss, not noise)."""
        return self.low > 0 or self.high < 0


# --------------------------------------------------------------------------------- batched metrics
def batched_metrics(task: Task, states: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The task's metrics for B summed-state replicates at once ({state: [B, ...]} -> {metric: [B]}).

    Same formulas as the task metrics' `compute`; a task without a batched formula is computed one
    replicate at a time through its own metric.
    """
    spec = stats_task(task)
    with np.errstate(divide="ignore", invalid="ignore"):
        if isinstance(spec, SegmentationTask):
            values = _segmentation(spec, states)
        elif isinstance(spec, DepthTask):
            n = states["count"].astype(np.float64)
            pct = 100.0 * states["delta_hits"] / n[:, None]
            values = {
                "abs_err": states["abs_sum"] / n,
                "rel_err": states["rel_sum"] / n,
                **{f"delta{k + 1}": pct[:, k] for k in range(3)},
            }
        elif isinstance(spec, NormalTask):
            values = _normal(spec, states)
        elif isinstance(spec, RegressionTask):
            values = {"err": states["abs_sum"] / states["count"].astype(np.float64)}
        else:
            size = len(next(iter(states.values())))
            rows = [metrics_from_stats(spec, {k: v[b] for k, v in states.items()}) for b in range(size)]
            return {m: np.array([r[m] for r in rows]) for m in spec.metrics}
    # The metrics compute in float64 and report float32: round the same way so that replicate 0 of the
    # full image set reproduces the row.
    return {m: values[m].astype(np.float32).astype(np.float64) for m in spec.metrics}


def _segmentation(task: SegmentationTask, states: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    c = task.num_classes
    conf = states["confmat"].reshape(-1, c, c).astype(np.float64)
    diag = np.diagonal(conf, axis1=1, axis2=2)
    union = conf.sum(1) + conf.sum(2) - diag
    iou = diag / np.maximum(union, 1)
    keep = diag > 0 if task.miou_mode == "faithful" else union > 0
    return {
        "miou": (iou * keep).sum(1) / keep.sum(1),
        "pixel_acc": diag.sum(1) / conf.sum((1, 2)),
        "err": states["ce_sum"] / states["weight_sum"],
    }


def _normal(task: NormalTask, states: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = states["count"].astype(np.float64)
    hist = states["hist"].astype(np.float64)
    cum = hist.cumsum(1)
    half = cum[:, -1] / 2
    k = np.minimum((cum < half[:, None]).sum(1), hist.shape[1] - 1)
    rows = np.arange(len(hist))
    before = cum[rows, k] - hist[rows, k]
    median = (k + (half - before) / hist[rows, k]) * task.median_bin_deg
    pct = 100.0 * states["within_hits"] / n[:, None]
    out = {
        "mean_angle": states["angle_sum"] / n,
        "median_angle": np.where(cum[:, -1] > 0, median, np.nan),
        "cosine_similarity": states["cos_sum"] / n,
    }
    out.update({name: pct[:, i] for i, name in enumerate(WITHIN)})
    return out


def relative_average(
    clean: Mapping[str, Mapping[str, np.ndarray]],
    adv: Mapping[str, Mapping[str, np.ndarray]],
    directions: Mapping[str, Mapping[str, bool]],
) -> np.ndarray:
    """The paper's measure for B replicates: mean over tasks of the mean signed relative change [B]."""
    per_task = []
    for task, metrics in directions.items():
        changes = []
        for name, higher in metrics.items():
            c, a = clean[task][name], adv[task][name]
            with np.errstate(divide="ignore", invalid="ignore"):
                change = (1.0 if higher else -1.0) * (a - c) / np.abs(c)
            changes.append(np.where(np.isfinite(change), change, np.nan))
        per_task.append(_nanmean(np.stack(changes)))
    return _nanmean(np.stack(per_task))


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the finite entries; NaN where none is finite (as the row's measure)."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(0)
    count = finite.sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ------------------------------------------------------------------------------------------ bootstrap
def image_weights(num_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[B, N] multiplicities of images drawn with replacement; replicate 0 is the full set (weights 1)."""
    draws = rng.integers(0, num_images, size=(replicates, num_images))
    weights = np.zeros((replicates, num_images))
    np.add.at(weights, (np.arange(replicates)[:, None], draws), 1.0)
    weights[0] = 1.0
    return weights


def seed_draws(num_seeds: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[B, S] seed indices drawn with replacement; replicate 0 takes every seed once."""
    draws = rng.integers(0, num_seeds, size=(replicates, num_seeds))
    draws[0] = np.arange(num_seeds)
    return draws


def _weighted_sums(states: Mapping[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """{state: [N, ...]} summed under each image weighting [B, N] -> {state: [B, ...]}."""
    out = {}
    for name, value in states.items():
        summed = weights @ value.reshape(len(value), -1).astype(np.float64)
        out[name] = summed.reshape(len(weights), *value.shape[1:])
    return out


def replicate_measure(cell: SeedCell, tasks: Mapping[str, Task], weights: np.ndarray) -> np.ndarray:
    """The measure of one seed's cell under each image weighting [B, N] -> [B]."""
    clean, adv = {}, {}
    for name, task in tasks.items():
        clean[name] = batched_metrics(task, _weighted_sums(cell.clean[name], weights))
        adv[name] = batched_metrics(task, _weighted_sums(cell.adv[name], weights))
    directions = {name: task.higher_is_better for name, task in tasks.items()}
    return relative_average(clean, adv, directions)


def _num_images(cell: SeedCell) -> int:
    states = next(iter(cell.adv.values()))
    return len(next(iter(states.values())))


class Bootstrap:
    """Shared bootstrap draws, so that every estimate and comparison of a report uses the same image and
    seed draws (a paired comparison needs them equal on both sides) and each cell's replicate measures
    are computed once. Cells are cached by `SeedCell` identity: build each cell once per report."""

    def __init__(self, replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> None:
        if replicates < 2:
            raise ValueError(f"the bootstrap needs at least 2 replicates, got {replicates}")
        self.replicates, self.seed = int(replicates), int(seed)
        self._weights: dict[int, np.ndarray] = {}
        self._seeds: dict[int, np.ndarray] = {}
        self._measures: dict[int, tuple[SeedCell, np.ndarray]] = {}

    def weights(self, num_images: int) -> np.ndarray:
        if num_images not in self._weights:
            rng = np.random.default_rng((self.seed, 0, num_images))
            self._weights[num_images] = image_weights(num_images, self.replicates, rng)
        return self._weights[num_images]

    def seed_draws(self, num_seeds: int) -> np.ndarray:
        if num_seeds not in self._seeds:
            rng = np.random.default_rng((self.seed, 1, num_seeds))
            self._seeds[num_seeds] = seed_draws(num_seeds, self.replicates, rng)
        return self._seeds[num_seeds]

    def measure(self, cell: SeedCell, tasks: Mapping[str, Task]) -> np.ndarray:
        """The cell's measure under every image draw [B] (replicate 0: all images)."""
        cached = self._measures.get(id(cell))
        if cached is None or cached[0] is not cell:
            cached = (cell, replicate_measure(cell, tasks, self.weights(_num_images(cell))))
            self._measures[id(cell)] = cached
        return cached[1]

    def estimate(self, cells: Sequence[SeedCell], tasks: Mapping[str, Task]) -> Estimate:
        """Mean over seeds of a cell's measure with its two-level bootstrap interval."""
        return self._estimate([cells], tasks, lambda m: m[0])

    def paired(self, a: Sequence[SeedCell], b: Sequence[SeedCell], tasks: Mapping[str, Task]) -> Estimate:
        """measure(a) - measure(b) on the same images and seeds (matched by seed; seeds on both sides)."""
        shared = sorted({c.seed for c in a} & {c.seed for c in b})
        if not shared:
            raise ValueError("a paired comparison needs at least one seed evaluated on both sides")
        a = [next(c for c in a if c.seed == s) for s in shared]
        b = [next(c for c in b if c.seed == s) for s in shared]
        return self._estimate([a, b], tasks, lambda m: m[0] - m[1])

    def _estimate(self, groups: Sequence[Sequence[SeedCell]], tasks: Mapping[str, Task], combine) -> Estimate:
        sizes = {_num_images(c) for g in groups for c in g}
        if len(sizes) != 1:
            raise ValueError(
                f"the compared cells were scored on different numbers of images: {sorted(sizes)}"
            )
        num_images, num_seeds = sizes.pop(), len(groups[0])
        if num_seeds == 0:
            raise ValueError("an estimate needs at least one seed")
        per_seed = combine([np.stack([self.measure(c, tasks) for c in g]) for g in groups])  # [S, B]
        draws = self.seed_draws(num_seeds)
        with np.errstate(all="ignore"):
            reps = np.nanmean(per_seed.T[np.arange(self.replicates)[:, None], draws], axis=1)[1:]
        alpha = (1.0 - CONFIDENCE) / 2.0
        finite = reps[np.isfinite(reps)]
        low, high = np.quantile(finite, [alpha, 1.0 - alpha]) if finite.size else (math.nan, math.nan)
        point = per_seed[:, 0]
        return Estimate(
            mean=float(np.mean(point)),
            std=float(np.std(point, ddof=1)) if num_seeds > 1 else math.nan,
            low=float(low),
            high=float(high),
            num_seeds=num_seeds,
            num_images=num_images,
        )


def bootstrap_estimate(
    cells: Sequence[SeedCell], tasks: Mapping[str, Task], replicates: int = DEFAULT_REPLICATES, seed: int = 0
) -> Estimate:
    """Mean over seeds of a cell's measure with its two-level bootstrap interval (see the module doc)."""
    return Bootstrap(replicates, seed).estimate(cells, tasks)


def paired_difference(
    a: Sequence[SeedCell],
    b: Sequence[SeedCell],
    tasks: Mapping[str, Task],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
) -> Estimate:
    """measure(a) - measure(b) on the same images and seeds, with its paired bootstrap interval."""
    return Bootstrap(replicates, seed).paired(a, b, tasks)
