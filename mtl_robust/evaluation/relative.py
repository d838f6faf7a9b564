"""The paper's measure: per-metric relative change, signed so that negative means worse.

For a metric with clean value v and adversarial value v', the change is s * (v' - v) / |v| with s = +1 when
higher is better and -1 when lower is better. A task's change is the mean over its metrics (so tasks with
many metrics do not dominate); the model's change is the mean over tasks. Losses count as lower-is-better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

TaskValues = Mapping[str, Mapping[str, float]]


def relative_change(clean: float, adversarial: float, higher_is_better: bool) -> float:
    """Signed relative change; NaN when the clean value is 0 (no scale to compare against)."""
    if clean == 0 or not math.isfinite(clean) or not math.isfinite(adversarial):
        return math.nan
    sign = 1.0 if higher_is_better else -1.0
    return sign * (adversarial - clean) / abs(clean)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass
class RelativeChange:
    per_metric: dict[str, dict[str, float]] = field(default_factory=dict)
    per_task: dict[str, float] = field(default_factory=dict)
    average: float = math.nan
    loss_per_task: dict[str, float] = field(default_factory=dict)
    loss_average: float = math.nan


def compare(
    clean: TaskValues,
    adversarial: TaskValues,
    higher_is_better: Mapping[str, Mapping[str, bool]],
    clean_losses: Mapping[str, float] | None = None,
    adversarial_losses: Mapping[str, float] | None = None,
) -> RelativeChange:
    """Relative change of every metric of every task, their per-task means and the average over tasks."""
    result = RelativeChange()
    for task, directions in higher_is_better.items():
        if task not in clean or task not in adversarial:
            raise KeyError(f"task {task!r} is missing from the clean or the adversarial results")
        metrics = {
            name: relative_change(clean[task][name], adversarial[task][name], higher)
            for name, higher in directions.items()
        }
        result.per_metric[task] = metrics
        result.per_task[task] = _mean(list(metrics.values()))
    result.average = _mean(list(result.per_task.values()))
    if clean_losses is not None and adversarial_losses is not None:
        result.loss_per_task = {
            t: relative_change(clean_losses[t], adversarial_losses[t], higher_is_better=False)
            for t in higher_is_better
        }
        result.loss_average = _mean(list(result.loss_per_task.values()))
    return result
