"""The paper's measure: per-metric relative change, signed so that negative means worse.

For a metric with clean value v and adversarial value v', the change is s * (v' - v) / |v| with s = +1 when
higher is better and -1 when lower is better. A task's change is the mean over its metrics (so tasks with
many metrics do not dominate); the model's change is the mean over tasks. Losses count as lower-is-better.

Two things can make that measure meaningless, and neither is dropped silently:

* a non-finite adversarial metric (an error of inf under attack): the task's and the model's change are
  NaN and the row lists the metric in `rel_nonfinite`;
* a clean value that gives no scale: 0, non-finite (not computable on these images), or near zero, where
  a change divided by it is unbounded (an error of 0.002 going to 0.05 is -2400 %). A metric whose clean
  value is below its floor (`near_zero_floors`: a share of the trivial predictor's value of that metric),
  0 or non-finite is left out of the task's mean and listed in `rel_excluded`.

Beside the paper's unbounded measure the row carries a bounded one, `rel_avg_capped`: each metric's change
clipped to [-100 %, +100 %], so an error that triples counts as much as an mIoU that drops to 0, and error
metrics cannot dominate the average (docs/statistics.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TaskValues = Mapping[str, Mapping[str, float]]

# A clean metric below this share of the trivial predictor's value of it is a near-zero denominator.
NEAR_ZERO_OF_TRIVIAL = 0.05
CAP = 1.0  # the bounded measure clips each metric's change to [-CAP, CAP]


def relative_change(clean: float, adversarial: float, higher_is_better: bool) -> float:
    """Signed relative change; NaN when the clean value is 0 (no scale to compare against)."""
    if clean == 0 or not math.isfinite(clean) or not math.isfinite(adversarial):
        return math.nan
    sign = 1.0 if higher_is_better else -1.0
    return sign * (adversarial - clean) / abs(clean)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _capped(value: float) -> float:
    return max(-CAP, min(CAP, value)) if math.isfinite(value) else value


@dataclass
class RelativeChange:
    per_metric: dict[str, dict[str, float]] = field(default_factory=dict)
    per_task: dict[str, float] = field(default_factory=dict)
    average: float = math.nan
    loss_per_task: dict[str, float] = field(default_factory=dict)
    loss_average: float = math.nan
    per_task_capped: dict[str, float] = field(default_factory=dict)
    average_capped: float = math.nan
    excluded: list[str] = field(default_factory=list)  # "task/metric" whose clean value gives no scale
    nonfinite: list[str] = field(default_factory=list)  # "task/metric" non-finite under attack


def near_zero_floors(trivial_baseline: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """{task: {metric: floor}} from a row's stored trivial-predictor metrics (empty without them)."""
    out: dict[str, dict[str, float]] = {}
    for task, info in (trivial_baseline or {}).items():
        metrics = (info or {}).get("metrics") or {}
        floors = {
            name: NEAR_ZERO_OF_TRIVIAL * abs(float(value))
            for name, value in metrics.items()
            if isinstance(value, int | float) and math.isfinite(value)
        }
        out[task] = floors
    return out


def compare(
    clean: TaskValues,
    adversarial: TaskValues,
    higher_is_better: Mapping[str, Mapping[str, bool]],
    clean_losses: Mapping[str, float] | None = None,
    adversarial_losses: Mapping[str, float] | None = None,
    floors: Mapping[str, Mapping[str, float]] | None = None,
) -> RelativeChange:
    """Relative change of every metric of every task, their per-task means and the average over tasks;
    near-zero clean metrics (below `floors`) left out, non-finite ones making their task NaN."""
    result = RelativeChange()
    floors = floors or {}
    for task, directions in higher_is_better.items():
        if task not in clean or task not in adversarial:
            raise KeyError(f"task {task!r} is missing from the clean or the adversarial results")
        metrics, kept, broken = {}, [], False
        for name, higher in directions.items():
            c, a = float(clean[task][name]), float(adversarial[task][name])
            metrics[name] = relative_change(c, a, higher)
            if not math.isfinite(c) or c == 0 or abs(c) < floors.get(task, {}).get(name, 0.0):
                result.excluded.append(f"{task}/{name}")  # no scale to compare against (as the bootstrap)
            elif not math.isfinite(a):
                result.nonfinite.append(f"{task}/{name}")
                broken = True
            else:
                kept.append(metrics[name])
        result.per_metric[task] = metrics
        result.per_task[task] = math.nan if broken else _mean(kept)
        result.per_task_capped[task] = math.nan if broken else _mean([_capped(v) for v in kept])
    if result.nonfinite:
        result.average = result.average_capped = math.nan  # a broken task is a failure, never dropped
    else:
        result.average = _mean(list(result.per_task.values()))
        result.average_capped = _mean(list(result.per_task_capped.values()))
    if clean_losses is not None and adversarial_losses is not None:
        result.loss_per_task = {
            t: relative_change(clean_losses[t], adversarial_losses[t], higher_is_better=False)
            for t in higher_is_better
        }
        result.loss_average = _mean(list(result.loss_per_task.values()))
    return result
