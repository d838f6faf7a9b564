"""The independent baseline of a model, recognised by structure rather than by name.

A layout is independent when no two tasks share a block: sharing score 0. Studies name layouts in
different ways (`independent`, a TreeMTL index such as `2`, an explicit partition), so the baseline of a
model is the sharing-0 model with the same tasks, data, backbone and defense, whatever it was called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mtl_robust.evaluation.records import Record, num

# (store, study, data, backbone, defense, layout_name), as the report keys models
ModelKey = tuple[str, str, str, str, str, str]


def is_independent(record: Record) -> bool:
    score = record.sharing_score
    if math.isfinite(score):
        return score == 0
    return record.layout_name == "independent"  # rows written before the score was recorded


def independent_baseline(chosen: Mapping[ModelKey, Record], key: ModelKey) -> Record | None:
    """The independent model for `key`: from the same store and study if there is one, else any store.

    Among several candidates the latest row wins.
    """
    row = chosen[key]
    tasks = sorted(row.tasks)

    def matches(k: ModelKey, r: Record) -> bool:
        return k[2:5] == key[2:5] and is_independent(r) and sorted(r.tasks) == tasks

    def latest(candidates: list[Record]) -> Record | None:
        return max(candidates, key=lambda r: num(r.time)) if candidates else None

    same_source = [r for k, r in chosen.items() if k[:2] == key[:2] and matches(k, r)]
    return latest(same_source) or latest([r for k, r in chosen.items() if matches(k, r)])
