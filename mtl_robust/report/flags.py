"""Flags of a results row's model, and the mark every report table and legend puts on a flagged model.

Two sources: the diagnostics flags the evaluation stored (`results["diagnostics"]`, gradient masking and
sanity checks) and `undertrained:<task>`, derived here from the row's clean metrics and the trivial
predictor's metrics stored with it (`results["trivial_baseline"]`, `evaluation/trivial_baseline.py`): a
model whose clean metrics on a task are not at least `MIN_GAIN` better than predicting the training set's
class frequencies / mean depth / mean normal has learned too little for its robustness to mean anything.
"""

from __future__ import annotations

import math

from mtl_robust.report.records import Record, num

FLAG_MARK = "⚠"
UNDERTRAINED = "undertrained"
# The smallest mean relative improvement over the trivial predictor (over the task's metrics) that counts
# as "clearly better": 10 %.
MIN_GAIN = 0.10


def trivial_gains(record: Record) -> dict[str, float]:
    """Per task: mean over its metrics of the signed relative improvement of the model's clean metrics
    over the trivial predictor's (positive = better than trivial); tasks without a baseline are absent."""
    baseline = record.results.get("trivial_baseline") or {}
    clean = record.clean_metrics()
    out = {}
    for task, info in baseline.items():
        metrics = (info or {}).get("metrics") or {}
        higher = (info or {}).get("higher_is_better") or {}
        changes = []
        for name, trivial in metrics.items():
            model, trivial = clean.get(task, {}).get(name, math.nan), num(trivial)
            if name not in higher or not (math.isfinite(model) and math.isfinite(trivial)) or trivial == 0:
                continue
            changes.append((1.0 if higher[name] else -1.0) * (model - trivial) / abs(trivial))
        if changes:
            out[task] = sum(changes) / len(changes)
    return out


def undertrained_flags(record: Record, min_gain: float = MIN_GAIN) -> list[str]:
    """`undertrained:<task>` for every task on which the model is not clearly better than trivial."""
    return [f"{UNDERTRAINED}:{t}" for t, gain in trivial_gains(record).items() if not gain >= min_gain]


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
