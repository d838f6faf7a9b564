"""Relative change against eps: one series per direction for every model and attack method."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from mtl_robust.report.directions import direction_sort_key
from mtl_robust.report.flags import mark
from mtl_robust.report.order import family_attack_order, layout_ranks, ordered_tasks
from mtl_robust.report.records import Record, Sources
from mtl_robust.report.seeds import position_row
from mtl_robust.report.tables import slug


class CurvePoint(NamedTuple):
    """One budget of a series: relative change (%) per task and averaged over tasks."""

    eps: float
    rel_task: dict[str, float]
    rel_avg: float


@dataclass
class EpsCurves:
    """Relative change (%) against eps for every direction of one model and method."""

    source: str
    data: str
    backbone: str
    defense: str
    method: str
    layout_name: str
    tasks: list[str]
    series: dict[str, list[CurvePoint]]  # direction -> points sorted by eps, directions in report order

    @property
    def name(self) -> str:
        return slug("eps", self.source, self.data, self.backbone, self.defense, self.method, self.layout_name)


class CurveKey(NamedTuple):
    """One figure: a model (where it comes from, its family and layout) under one method."""

    source: str
    data: str
    backbone: str
    defense: str
    method: str
    layout: str


def eps_curves(records: Sequence[Record], method: str | None = None) -> tuple[list[EpsCurves], list[str]]:
    notes: list[str] = []
    sources = Sources.of(records)
    groups: dict[CurveKey, dict[tuple[str, float], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.ok and r.is_attack and (method is None or r.method == method) and math.isfinite(r.eps):
            key = CurveKey(sources.label(r), r.data, r.backbone, r.defense, r.method, r.layout_name)
            groups[key][(r.direction, r.eps_key)].append(r)
    rank = layout_ranks(records)
    out = []
    single_eps = 0
    for key in sorted(
        groups,
        key=lambda k: (
            k.source,
            *family_attack_order(k.data, k.backbone, k.defense, k.method),
            rank[k.layout],
        ),
    ):
        cells = groups[key]
        rows_in = [r for rs in cells.values() for r in rs]
        tasks = ordered_tasks(rows_in)
        series: dict[str, list[CurvePoint]] = defaultdict(list)
        for (direction, _eps), rs in cells.items():
            r = position_row(rs, f"ε curves {' · '.join(part for part in key if part)} / {direction}", notes)
            series[direction].append(CurvePoint(r.eps, {t: r.rel_task(t) for t in tasks}, r.rel_avg))
        ordered = {
            d: sorted(series[d], key=lambda p: p.eps)
            for d in sorted(series, key=lambda d: direction_sort_key(d, tasks))
        }
        if len({p.eps for points in ordered.values() for p in points}) < 2:
            single_eps += 1  # a "curve" of one point is a dot: the tables hold that cell's numbers
            continue
        out.append(
            EpsCurves(
                source=key.source,
                data=key.data,
                backbone=key.backbone,
                defense=key.defense,
                method=key.method,
                layout_name=mark(key.layout, rows_in[0]),  # ⚠ where the model is flagged
                tasks=tasks,
                series=ordered,
            )
        )
    if single_eps:
        notes.append(
            f"relative change vs ε: {single_eps} model/method pair{'s' if single_eps != 1 else ''} "
            "attacked at one ε only get no curve (the tables hold their numbers)"
        )
    return out, notes
