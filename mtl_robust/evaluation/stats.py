"""Uncertainty of the paper's measure: mean and spread over seeds, calibrated CIs, paired comparisons.

The measure of a cell (the average over tasks of the mean relative change of each task's metrics) is a
function of the clean and adversarial metric statistics summed over the evaluated images. Each seed's
measure is recomputed under shared bootstrap draws of the images (the same draw for every seed: all seeds
are scored on the same images). The default interval ("t") is a t-interval over the seed means whose
variance adds the image-bootstrap variance of the seed mean to the between-seed variance, with S-1 degrees
of freedom (normal quantiles with one seed, where only image noise is known). The older two-level
percentile bootstrap ("percentile") is kept for comparison: with 2-5 seeds it is far too narrow. A paired
comparison applies the same draws to both sides, so image and seed effects common to both cancel.

The metric set of a cell is fixed from the full image set: a replicate in which a kept metric cannot be
computed (a clean value of 0 in that draw) is counted as failed and left out, never averaged over a
different metric set. docs/statistics.md explains the method and shows its simulated coverage.
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
INTERVALS = ("t", "percentile")  # the calibrated default first; see the module doc
# A clean metric whose image-bootstrap standard deviation exceeds this share of its value is a near-zero
# denominator: the relative change it divides swings with the image draw.
NEAR_ZERO_SPREAD = 0.25


@dataclass(frozen=True)
class SeedCell:
    """One seed's evaluation of a cell: per-image clean and adversarial statistics of the same images."""

    seed: int
    clean: Stats
    adv: Stats
    image_set: str | None = None  # id of the evaluated images (from the side file); None: unknown
    excluded: frozenset[str] = frozenset()  # "task/metric" left out of the measure (near-zero clean value)


# Differences are printed in percentage points with two decimals: half the last digit, as a fraction.
RESOLUTION = 0.005 / 100


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds of the measure (fraction, not percent), its spread and its interval."""

    mean: float
    std: float  # over seeds (ddof 1); NaN with one seed
    low: float
    high: float
    num_seeds: int
    num_images: int
    p_value: float = math.nan  # two-sided, against a true value of 0 (meaningful for differences)
    failed_replicates: int = 0  # image draws in which a kept metric could not be computed
    replicates: int = 0
    near_zero: tuple[str, ...] = ()  # "task/metric" whose clean denominator is near zero

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (for a difference: a real win or loss, not noise), by more than the
        reports' resolution."""
        return (self.low > 0 or self.high < 0) and not self.negligible

    @property
    def negligible(self) -> bool:
        """The whole interval rounds to 0.00 percentage points, as the reports print it: no evidence of a
        difference however small its p-value (e.g. a model that barely responds to either attack)."""
        return max(abs(self.low), abs(self.high)) < RESOLUTION


# -------------------------------------------------------------------------------------------- batched metrics
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
    excluded: frozenset[str] | set[str] = frozenset(),
) -> np.ndarray:
    """The paper's measure for B replicates: mean over tasks of the mean signed relative change [B].

    The metric set is fixed by replicate 0 (the full image set), as in the row: a metric whose clean value
    there is 0 or non-finite (no scale), or that the row left out as a near-zero denominator (`excluded`),
    is left out everywhere. A replicate that cannot compute a kept metric is NaN (a failed replicate); a
    non-finite adversarial metric on the full set makes the measure itself NaN, never a smaller average.
    """
    per_task = []
    size = 0
    for task, metrics in directions.items():
        changes = []
        for name, higher in metrics.items():
            c, a = clean[task][name], adv[task][name]
            size = len(c)
            with np.errstate(divide="ignore", invalid="ignore"):
                change = (1.0 if higher else -1.0) * (a - c) / np.abs(c)
            change = np.where(np.isfinite(change), change, np.nan)
            if f"{task}/{name}" not in excluded and np.isfinite(c[0]) and c[0] != 0:
                changes.append(change)
        if changes:
            per_task.append(np.mean(np.stack(changes), axis=0))
    if not per_task:
        return np.full(size, np.nan)
    return np.mean(np.stack(per_task), axis=0)


def near_zero_denominators(clean: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[str, ...]:
    """ "task/metric" whose clean value is 0 on the full set or spreads over image draws by more than
    `NEAR_ZERO_SPREAD` of itself."""
    out = []
    for task, metrics in clean.items():
        for name, values in metrics.items():
            full = values[0]
            if not np.isfinite(full):
                continue
            spread = float(np.nanstd(values[1:])) if len(values) > 1 else 0.0
            if full == 0 or spread > NEAR_ZERO_SPREAD * abs(full):
                out.append(f"{task}/{name}")
    return tuple(out)


# -------------------------------------------------------------------------------------------------- bootstrap
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
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite statistic: NaN draws, counted
            summed = weights @ value.reshape(len(value), -1).astype(np.float64)
        out[name] = summed.reshape(len(weights), *value.shape[1:])
    return out


def replicate_measure(cell: SeedCell, tasks: Mapping[str, Task], weights: np.ndarray) -> np.ndarray:
    """The measure of one seed's cell under each image weighting [B, N] -> [B]."""
    clean, adv = _replicate_metrics(cell, tasks, weights)
    directions = {name: task.higher_is_better for name, task in tasks.items()}
    return relative_average(clean, adv, directions, cell.excluded)


Metrics = dict[str, dict[str, np.ndarray]]


def _replicate_metrics(
    cell: SeedCell, tasks: Mapping[str, Task], weights: np.ndarray
) -> tuple[Metrics, Metrics]:
    """(clean, adversarial) metrics of the cell under each image weighting: {task: {metric: [B]}}."""
    clean, adv = {}, {}
    for name, task in tasks.items():
        clean[name] = batched_metrics(task, _weighted_sums(cell.clean[name], weights))
        adv[name] = batched_metrics(task, _weighted_sums(cell.adv[name], weights))
    return clean, adv


def _num_images(cell: SeedCell) -> int:
    states = next(iter(cell.adv.values()))
    return len(next(iter(states.values())))


class Bootstrap:
    """Shared bootstrap draws, so that every estimate and comparison of a report uses the same image and
    seed draws (a paired comparison needs them equal on both sides) and each cell's replicate measures
    are computed once. Cells are cached by `SeedCell` identity: build each cell once per report.

    `interval` is "t" (the calibrated default) or "percentile" (the older two-level bootstrap, kept to
    show its coverage); see the module doc."""

    def __init__(self, replicates: int = DEFAULT_REPLICATES, seed: int = 0, interval: str = "t") -> None:
        if replicates < 2:
            raise ValueError(f"the bootstrap needs at least 2 replicates, got {replicates}")
        if interval not in INTERVALS:
            raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
        self.replicates, self.seed, self.interval = int(replicates), int(seed), interval
        self._weights: dict[int, np.ndarray] = {}
        self._seeds: dict[int, np.ndarray] = {}
        self._metrics: dict[int, tuple[SeedCell, Metrics, Metrics, tuple[str, ...]]] = {}

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

    def _cached(self, cell: SeedCell, tasks: Mapping[str, Task]) -> tuple[Metrics, Metrics, tuple[str, ...]]:
        """(clean metrics, adversarial metrics, near-zero clean denominators) under every image draw."""
        cached = self._metrics.get(id(cell))
        if cached is None or cached[0] is not cell:
            clean, adv = _replicate_metrics(cell, tasks, self.weights(_num_images(cell)))
            cached = (cell, clean, adv, near_zero_denominators(clean))
            self._metrics[id(cell)] = cached
        return cached[1], cached[2], cached[3]

    def measure(
        self, cell: SeedCell, tasks: Mapping[str, Task], excluded: frozenset[str] | None = None
    ) -> np.ndarray:
        """The cell's measure under every image draw [B] (replicate 0: all images), its near-zero metrics
        (or `excluded`, e.g. the union over both sides of a comparison) left out."""
        clean, adv, _ = self._cached(cell, tasks)
        directions = {name: task.higher_is_better for name, task in tasks.items()}
        return relative_average(clean, adv, directions, cell.excluded if excluded is None else excluded)

    def adversarial_difference(
        self, a: SeedCell, b: SeedCell, tasks: Mapping[str, Task], excluded: frozenset[str]
    ) -> np.ndarray:
        """Like with like: the mean over tasks of the signed relative difference of a's metrics under
        attack against b's under attack, s * (adv_a - adv_b) / |adv_b| [B] (positive = a better)."""
        _, adv_a, _ = self._cached(a, tasks)
        _, adv_b, _ = self._cached(b, tasks)
        directions = {name: task.higher_is_better for name, task in tasks.items()}
        return relative_average(adv_b, adv_a, directions, excluded)

    def estimate(self, cells: Sequence[SeedCell], tasks: Mapping[str, Task]) -> Estimate:
        """Mean over seeds of a cell's measure with its interval."""
        return self._estimate([cells], tasks)

    def paired(self, a: Sequence[SeedCell], b: Sequence[SeedCell], tasks: Mapping[str, Task]) -> Estimate:
        """measure(a) - measure(b) on the same images and seeds (matched by seed; seeds on both sides),
        both over the same metrics (a metric near zero on either side is left out of both)."""
        a, b = _matched(a, b)
        excluded = frozenset().union(*(c.excluded for c in a + b))
        per_seed = [self.measure(x, tasks, excluded) - self.measure(y, tasks, excluded) for x, y in zip(a, b)]
        return self._estimate([a, b], tasks, np.stack(per_seed))

    def paired_adversarial(
        self, a: Sequence[SeedCell], b: Sequence[SeedCell], tasks: Mapping[str, Task]
    ) -> Estimate:
        """The relative difference of a's metrics under attack against b's (`adversarial_difference`), per
        seed, with its interval: compares two models by what they keep under attack, like with like."""
        a, b = _matched(a, b)
        excluded = frozenset().union(*(c.excluded for c in a + b))
        per_seed = [self.adversarial_difference(x, y, tasks, excluded) for x, y in zip(a, b)]
        return self._estimate([a, b], tasks, np.stack(per_seed))

    def _estimate(
        self,
        groups: Sequence[Sequence[SeedCell]],
        tasks: Mapping[str, Task],
        per_seed: np.ndarray | None = None,
    ) -> Estimate:
        sizes = {_num_images(c) for g in groups for c in g}
        if len(sizes) != 1:
            raise ValueError(
                f"the compared cells were scored on different numbers of images: {sorted(sizes)}"
            )
        num_images, num_seeds = sizes.pop(), len(groups[0])
        if num_seeds == 0:
            raise ValueError("an estimate needs at least one seed")
        near_zero = sorted({name for g in groups for c in g for name in self._cached(c, tasks)[2]})
        if per_seed is None:  # one group: its own measure per seed [S, B]
            per_seed = np.stack([self.measure(c, tasks) for c in groups[0]])
        point = per_seed[:, 0]
        valid = np.isfinite(per_seed).all(axis=0)
        valid[0] = False  # replicate 0 is the full set, not a draw
        failed = int(self.replicates - 1 - valid.sum())
        if self.interval == "t":
            low, high, p_value = _t_interval(point, per_seed[:, valid])
        else:
            low, high, p_value = self._percentile_interval(per_seed)
        return Estimate(
            mean=float(np.mean(point)),
            std=float(np.std(point, ddof=1)) if num_seeds > 1 else math.nan,
            low=low,
            high=high,
            num_seeds=num_seeds,
            num_images=num_images,
            p_value=p_value,
            failed_replicates=failed,
            replicates=self.replicates - 1,
            near_zero=tuple(near_zero),
        )

    def _percentile_interval(self, per_seed: np.ndarray) -> tuple[float, float, float]:
        """Two-level percentile bootstrap: seeds and images drawn with replacement (the older method)."""
        draws = self.seed_draws(len(per_seed))
        with np.errstate(all="ignore"):
            reps = per_seed.T[np.arange(self.replicates)[:, None], draws].mean(axis=1)[1:]
        finite = reps[np.isfinite(reps)]
        if not finite.size:
            return math.nan, math.nan, math.nan
        alpha = (1.0 - CONFIDENCE) / 2.0
        low, high = np.quantile(finite, [alpha, 1.0 - alpha])
        p_value = min(1.0, 2.0 * min(float(np.mean(finite <= 0)), float(np.mean(finite >= 0))))
        return float(low), float(high), p_value


def _matched(a: Sequence[SeedCell], b: Sequence[SeedCell]) -> tuple[list[SeedCell], list[SeedCell]]:
    """The cells of the seeds on both sides, in seed order; both sides scored on one image set."""
    shared = sorted({c.seed for c in a} & {c.seed for c in b})
    if not shared:
        raise ValueError("a paired comparison needs at least one seed evaluated on both sides")
    a = [next(c for c in a if c.seed == s) for s in shared]
    b = [next(c for c in b if c.seed == s) for s in shared]
    sets = {c.image_set for c in a + b}
    if len(sets) > 1:
        raise ValueError(f"the compared cells were scored on different image sets: {sorted(map(str, sets))}")
    return a, b


def _t_interval(point: np.ndarray, draws: np.ndarray) -> tuple[float, float, float]:
    """(low, high, two-sided p against 0) of the seed mean.

    All seeds are scored on the same images, so a seed's measure is model effect + image effect + their
    interaction. The image bootstrap of the seed mean estimates image effect + interaction / S; the spread
    of the seed measures holds model effect + interaction, so the interaction, estimated from how each
    seed's draws deviate from the mean draw, is taken out of it once (floored at 0). Each part gets its own
    quantile: t(S-1) for the seed part (estimated from S seeds), the normal quantile for the image part
    (estimated from many draws), and the half-widths add in quadrature. With 2 seeds t(1) = 12.7 then no
    longer multiplies the image noise too; with one seed the interval is the image part alone."""
    num_seeds = len(point)
    if not np.isfinite(point).all() or draws.shape[1] < 2:
        return math.nan, math.nan, math.nan
    image_var = float(np.var(draws.mean(axis=0), ddof=1))
    seed_var = 0.0
    if num_seeds > 1:
        deviations = draws - draws.mean(axis=0, keepdims=True)
        interaction = num_seeds / (num_seeds - 1) * float(np.mean(np.var(deviations, axis=1, ddof=1)))
        seed_var = max(float(np.var(point, ddof=1)) - interaction, 0.0) / num_seeds
    mean = float(np.mean(point))
    if seed_var == 0 and image_var == 0:
        return mean, mean, 1.0 if mean == 0 else 0.0
    half = _half_width(seed_var, image_var, num_seeds, CONFIDENCE)
    return mean - half, mean + half, _p_value(abs(mean), seed_var, image_var, num_seeds)


def _half_width(seed_var: float, image_var: float, num_seeds: int, confidence: float) -> float:
    from scipy import stats as scipy_stats  # scipy comes with cvxpy; imported where intervals are built

    upper = 0.5 + confidence / 2.0
    t = float(scipy_stats.t.ppf(upper, num_seeds - 1)) if num_seeds > 1 else 0.0
    z = float(scipy_stats.norm.ppf(upper))
    return math.sqrt(t * t * seed_var + z * z * image_var)


def _p_value(distance: float, seed_var: float, image_var: float, num_seeds: int) -> float:
    """The smallest 1 - confidence at which the interval still excludes 0 (bisection on the level)."""
    if distance == 0:
        return 1.0
    low, high = 0.0, 1.0 - 1e-12  # confidence levels: `low` excludes 0, `high` may not
    if _half_width(seed_var, image_var, num_seeds, high) < distance:
        return 1e-12
    for _ in range(60):
        middle = (low + high) / 2.0
        if _half_width(seed_var, image_var, num_seeds, middle) < distance:
            low = middle
        else:
            high = middle
    return 1.0 - (low + high) / 2.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    family = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (family - rank) * p))
        adjusted[i] = running
    return adjusted


def bootstrap_estimate(
    cells: Sequence[SeedCell],
    tasks: Mapping[str, Task],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    interval: str = "t",
) -> Estimate:
    """Mean over seeds of a cell's measure with its interval (see the module doc)."""
    return Bootstrap(replicates, seed, interval).estimate(cells, tasks)


def paired_difference(
    a: Sequence[SeedCell],
    b: Sequence[SeedCell],
    tasks: Mapping[str, Task],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    interval: str = "t",
) -> Estimate:
    """measure(a) - measure(b) on the same images and seeds, with its paired interval."""
    return Bootstrap(replicates, seed, interval).paired(a, b, tasks)
