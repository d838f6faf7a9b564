"""Models as the report knows them (one layout of one data/backbone/defense in one store and study), the
row whose clean metrics stand for each, and each model's clean gain over its independent baseline.

The independent baseline is recognised by structure rather than by name: a layout is independent when no
two tasks share a block (sharing score 0). Studies name layouts in different ways (`independent`, a
TreeMTL index such as `2`, an explicit partition), so the baseline of a model is the sharing-0 model with
the same tasks, data, backbone and defense, whatever it was called.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from mtl_robust.evaluation.relative import RelativeChange, compare
from mtl_robust.report.order import defense_sort_key
from mtl_robust.report.records import Record, num
from mtl_robust.report.seeds import mean_over_seeds, row_seed

INDEPENDENT = "independent"


class ModelFamily(NamedTuple):
    """Models that are compared with each other: same data, backbone and defense, any layout."""

    data: str
    backbone: str
    defense: str

    def sort_key(self) -> tuple:
        return (self.data, self.backbone, defense_sort_key(self.defense))


class ModelKey(NamedTuple):
    """One model: a layout of a family, in one store and study."""

    store: str
    study: str
    data: str
    backbone: str
    defense: str
    layout: str

    @classmethod
    def of(cls, record: Record) -> ModelKey:
        r = record
        return cls(r.store, r.study, r.data, r.backbone, r.defense, r.layout_name)

    @property
    def family(self) -> ModelFamily:
        return ModelFamily(self.data, self.backbone, self.defense)

    @property
    def source(self) -> tuple[str, str]:
        return (self.store, self.study)


def is_independent(record: Record) -> bool:
    score = record.sharing_score
    if math.isfinite(score):
        return score == 0
    return record.layout_name == INDEPENDENT  # rows written before the score was recorded


def independent_baseline(chosen: Mapping[ModelKey, Record], key: ModelKey) -> Record | None:
    """The independent model for `key`: from the same store and study if there is one, else any store.

    Among several candidates the latest row wins.
    """
    row = chosen[key]
    tasks = sorted(row.tasks)

    def matches(k: ModelKey, r: Record) -> bool:
        return k.family == key.family and is_independent(r) and sorted(r.tasks) == tasks

    def latest(candidates: list[Record]) -> Record | None:
        return max(candidates, key=lambda r: num(r.time)) if candidates else None

    same_source = [r for k, r in chosen.items() if k.source == key.source and matches(k, r)]
    return latest(same_source) or latest([r for k, r in chosen.items() if matches(k, r)])


def clean_rows(records: Sequence[Record], notes: list[str] | None = None) -> dict[ModelKey, Record]:
    """The row whose clean metrics stand for each model; clean-only rows (method 'none') are preferred.
    A model trained with several seeds stands for the mean over its seeds (`mean_over_seeds`)."""
    notes = [] if notes is None else notes
    candidates: dict[ModelKey, list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.clean_metrics():
            candidates[ModelKey.of(r)].append(r)
    chosen = {}
    for key, rows in candidates.items():
        clean_only = [r for r in rows if not r.is_attack]
        by_seed: dict[int, list[Record]] = defaultdict(list)
        for r in clean_only or rows:
            by_seed[row_seed(r)].append(r)
        seeds = [
            max(pool, key=lambda r: num(r.time) if math.isfinite(num(r.time)) else -math.inf)
            for pool in by_seed.values()
        ]
        for seed in sorted(by_seed):
            models = {r.text("model_id") for r in rows if row_seed(r) == seed}
            if len(models) > 1:
                used = next(r for r in seeds if row_seed(r) == seed)
                notes.append(
                    f"layout {key.layout} ({key.data}, {key.backbone}, defense {key.defense}) has rows of "
                    f"{len(models)} different checkpoints for seed {seed} ({', '.join(sorted(models))}); "
                    f"clean metrics of {used.text('model_id')} are used"
                )
        chosen[key] = mean_over_seeds(seeds)
    return chosen


def _clean_change(base: Record, value: Record) -> RelativeChange:
    """compare() with base = the independent model's clean metrics; tasks or metrics missing on either side
    are left out (their change would be meaningless) rather than failing the whole report."""
    hib_raw = value.results.get("higher_is_better") or base.results.get("higher_is_better") or {}
    base_clean, value_clean = base.clean_metrics(), value.clean_metrics()
    hib = {
        t: {m: bool(h) for m, h in ms.items() if m in base_clean.get(t, {}) and m in value_clean.get(t, {})}
        for t, ms in hib_raw.items()
        if t in base_clean and t in value_clean
    }
    hib = {t: ms for t, ms in hib.items() if ms}
    return compare(base_clean, value_clean, hib)


def clean_gains(
    records: Sequence[Record], notes: list[str] | None = None
) -> dict[ModelKey, RelativeChange | None]:
    """Clean accuracy gain of every model over the independent model of the same data, backbone, defense.

    The independent model is looked up in the same store and study first, then in any store given. None
    where no independent model exists.
    """
    notes = [] if notes is None else notes
    chosen = clean_rows(records, notes)
    gains: dict[ModelKey, RelativeChange | None] = {}
    missing: set[ModelFamily] = set()
    for key, row in chosen.items():
        base = independent_baseline(chosen, key)  # sharing score 0, whatever the layout is called
        if base is None:
            missing.add(key.family)
            gains[key] = None
            continue
        if (base.store, base.study) != key.source:
            notes.append(
                f"clean gain of {key.layout} ({key.store or '-'}/{key.study}): independent model taken from "
                f"{base.store or '-'}/{base.study}"
            )
        gains[key] = _clean_change(base, row)
    for family in sorted(missing):
        notes.append(
            f"no independent layout (sharing score 0) with clean metrics for {family.data} / "
            f"{family.backbone} / defense {family.defense}: "
            "clean gains (and the trade-off plot) are not available there"
        )
    return gains
