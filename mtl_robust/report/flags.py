"""Flags of a results row's model, and the mark every report table and legend puts on a flagged model.

Two sources: the diagnostics flags the evaluation stored (`results["diagnostics"]`, gradient masking and
sanity checks) and `undertrained:<task>`, derived here from the row's clean metrics and the trivial
predictor's metrics stored with it (`results["trivial_baseline"]`, `evaluation/trivial_baseline.py`): a
model that is not clearly better than predicting the training set's class frequencies / mean depth / mean
normal has learned too little for its robustness to mean anything.

"Clearly better" asks two things of a task: its metrics' mean relative gain over the trivial predictor is
at least `MIN_GAIN`, and every one of its metrics gains at least `MIN_METRIC_GAIN`. The second closes the
loophole of a near-zero trivial metric: an mIoU of 0.023 -> 0.04 is a 74 % gain on its own, while a pixel
accuracy and cross-entropy equal to the trivial predictor's say the model predicts the class prior.
A metric the trivial predictor already scores perfectly (an error of 0, a share of 1.0 or 100 %) has no
room to gain and is not counted.
"""

from __future__ import annotations

import math

from mtl_robust.report.records import Record, num

FLAG_MARK = "⚠"
UNDERTRAINED = "undertrained"
# The smallest mean relative improvement over the trivial predictor (over the task's metrics) that counts
# as "clearly better": 10 %; and the smallest improvement every single metric must show: 1 %.
MIN_GAIN = 0.10
MIN_METRIC_GAIN = 0.01


def metric_gains(record: Record) -> dict[str, dict[str, float]]:
    """Per task and metric: the signed relative improvement of the model's clean metric over the trivial
    predictor's (positive = better than trivial); +inf where the trivial value is 0 and the model better,
    0 where both are 0. Tasks without a baseline are absent."""
    baseline = record.results.get("trivial_baseline") or {}
    clean = record.clean_metrics()
    out: dict[str, dict[str, float]] = {}
    for task, info in baseline.items():
        metrics = (info or {}).get("metrics") or {}
        higher = (info or {}).get("higher_is_better") or {}
        gains = {}
        for name, trivial in metrics.items():
            model, trivial = clean.get(task, {}).get(name, math.nan), num(trivial)
            if name not in higher or not (math.isfinite(model) and math.isfinite(trivial)):
                continue
            if _perfect(trivial, higher[name]):
                continue  # no room: a depth delta3 of 100 % for the mean depth on easy data
            better = (1.0 if higher[name] else -1.0) * (model - trivial)
            if trivial == 0:
                gains[name] = math.inf if better > 0 else (0.0 if better == 0 else -math.inf)
            else:
                gains[name] = better / abs(trivial)
        if gains:
            out[task] = gains
    return out


def _perfect(value: float, higher_is_better: bool) -> bool:
    return value in (1.0, 100.0) if higher_is_better else value == 0.0


def trivial_gains(record: Record) -> dict[str, float]:
    """Per task: mean over its metrics of the relative improvement over the trivial predictor (metrics
    with a trivial value of 0 count at most +100 %, so one of them cannot carry the mean alone)."""
    return {
        task: sum(min(g, 1.0) for g in gains.values()) / len(gains)
        for task, gains in metric_gains(record).items()
    }


def undertrained_flags(
    record: Record, min_gain: float = MIN_GAIN, min_metric_gain: float = MIN_METRIC_GAIN
) -> list[str]:
    """`undertrained:<task>` for every task on which the model is not clearly better than trivial: a mean
    gain below `min_gain`, or any metric gaining less than `min_metric_gain`."""
    flags = []
    means = trivial_gains(record)
    for task, gains in metric_gains(record).items():
        if not (means[task] >= min_gain and all(g >= min_metric_gain for g in gains.values())):
            flags.append(f"{UNDERTRAINED}:{task}")
    return flags


def model_flags(record: Record) -> list[str]:
    """The flags of the model a row belongs to (empty when not diagnosed or all clear)."""
    diagnostics = record.results.get("diagnostics") or {}
    flags = [str(f) for f in diagnostics.get("flags") or []] + undertrained_flags(record)
    return list(dict.fromkeys(flags))


def mark(label: str, record: Record) -> str:
    """`label` with the flag mark when the row's model is flagged (its numbers may mislead)."""
    return f"{label} {FLAG_MARK}" if model_flags(record) else label


def marked_layout(record: Record) -> str:
    """The layout name, marked when the model tripped a flag."""
    return mark(record.layout_name, record)
