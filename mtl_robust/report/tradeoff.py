"""Sharing vs robustness (the paper's RQ3): per layout, the clean accuracy gain over the independent model
against the relative change under an attack, one scatter per data, backbone and direction.

The paper draws it under DGBA; every other whole-model direction present gets its own scatter (file names
end in the direction), except TOTAL, the baseline DGBA is measured against, and per-task directions
(SINGLE), which attack one task rather than the model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from mtl_robust.report.directions import DGBA, TOTAL, direction_label, direction_sort_key, spec_of
from mtl_robust.report.flags import marked_layout
from mtl_robust.report.models import ModelKey, clean_gains
from mtl_robust.report.order import defense_sort_key, method_sort_key
from mtl_robust.report.records import Record, Sources, attack_eps, attack_eps_slug, num
from mtl_robust.report.seeds import position_row
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import same_eps


@dataclass
class TradeoffPoint:
    source: str
    defense: str
    layout_name: str
    sharing_score: float
    clean_gain: float  # % over the independent model (mean over tasks)
    attack_change: float  # rel_avg under the set's direction, %


@dataclass
class TradeoffSet:
    """Sharing-vs-robustness points of one (data, backbone) under one direction, method and eps."""

    data: str
    backbone: str
    method: str
    eps: float
    points: list[TradeoffPoint]
    direction: str = str(DGBA)

    @property
    def name(self) -> str:
        suffix = "" if spec_of(self.direction) == DGBA else self.direction
        return slug(
            "tradeoff", self.data, self.backbone, self.method, attack_eps_slug(self.eps, self.method), suffix
        )

    @property
    def label(self) -> str:
        return direction_label(self.direction)

    def table(self) -> Table:
        show_source = any(p.source for p in self.points)
        return Table(
            name=self.name,
            title=(
                f"Sharing vs robustness · {self.data} · {self.backbone} · {self.label} {self.method.upper()} "
                f"ε={attack_eps(self.eps, self.method)}"
            ),
            columns=(["source"] if show_source else [])
            + ["defense", "layout", "sharing", "clean gain (%)", f"{self.label} avg (%)"],
            rows=[
                ([p.source] if show_source else [])
                + [
                    p.defense,
                    p.layout_name,
                    int(p.sharing_score) if math.isfinite(p.sharing_score) else None,
                    p.clean_gain,
                    p.attack_change,
                ]
                for p in self.points
            ],
            description=(
                "x = clean accuracy gain over the independent layout (sharing score 0; same data, backbone, "
                f"defense; mean over tasks); y = relative change under {self.label} (mean over tasks); "
                "both in percent; with several seeds of a model, means over its seeds."
            ),
        )


class TradeoffKey(NamedTuple):
    data: str
    backbone: str
    direction: str


def plotted_direction(direction: str) -> bool:
    """Whether the trade-off is drawn under this direction (see the module doc)."""
    spec = spec_of(direction)
    return spec is not None and not spec.per_task and spec.targets is None and spec != TOTAL


def tradeoff_sets(
    records: Sequence[Record], method: str | None = None, eps: float | None = None
) -> tuple[list[TradeoffSet], list[str]]:
    """Points for the sharing-vs-robustness scatter of each (data, backbone) and plotted direction.

    Method defaults to pgd when the direction has rows with it (else the first method that has); eps
    defaults to the largest eps with rows of that direction and method.
    """
    notes: list[str] = []
    sources = Sources.of(records)
    gains = clean_gains(records, notes)
    by_set: dict[TradeoffKey, list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.is_attack and plotted_direction(r.direction) and math.isfinite(r.eps):
            by_set[TradeoffKey(r.data, r.backbone, r.direction)].append(r)
    out = []
    for key in sorted(by_set, key=lambda k: (k.data, k.backbone, direction_sort_key(k.direction))):
        where, label = f"trade-off {key.data}/{key.backbone}", direction_label(key.direction)
        rows = by_set[key]
        methods = sorted({r.method for r in rows}, key=method_sort_key)
        chosen_method = method or ("pgd" if "pgd" in methods else methods[0])
        with_method = [r for r in rows if r.method == chosen_method]
        if not with_method:
            notes.append(f"{where}: no {label} rows with method {chosen_method}; skipped")
            continue
        chosen_eps = eps if eps is not None else max(r.eps for r in with_method)
        selected = [r for r in with_method if same_eps(r.eps, chosen_eps)]
        if not selected:
            notes.append(
                f"{where}: no {label} {chosen_method} rows at "
                f"ε={attack_eps(chosen_eps, chosen_method)}; skipped"
            )
            continue
        cells: dict[ModelKey, list[Record]] = defaultdict(list)
        for r in selected:
            cells[ModelKey.of(r)].append(r)
        points = []
        for model, rs in cells.items():
            r = position_row(rs, f"{where} {model.layout} defense {model.defense}", notes)
            gain = gains.get(model)
            if gain is None:
                continue  # clean_gains() already noted the missing independent model
            points.append(
                TradeoffPoint(
                    sources.label(r),
                    r.defense,
                    marked_layout(r),
                    r.sharing_score,
                    100 * gain.average,
                    r.rel_avg,
                )
            )
        if not points:
            notes.append(
                f"{where}: no layout has both a {label} row and a clean gain over "
                "the independent layout; scatter skipped"
            )
            continue
        points.sort(
            key=lambda p: (p.source, defense_sort_key(p.defense), -num(p.sharing_score), p.layout_name)
        )
        out.append(TradeoffSet(key.data, key.backbone, chosen_method, chosen_eps, points, key.direction))
    return out, notes
