"""Report sections with uncertainty: seeds aggregated (mean ± std, 95 % CI), paired comparisons, eps bands.

Cells that differ only by seed form one group (`report.seeds`). Its CI combines the spread over seeds
with a bootstrap over the evaluated images (`evaluation/stats.py`, docs/statistics.md), from the per-image
statistics files the rows reference. The paired comparisons are the paper's: DGBA vs TOTAL, DGBA vs the
strongest SINGLE, each layout vs the reference layout, adversarially trained vs clean model; a difference
is called significant only when its CI excludes 0. Rows without per-image files (older stores) still get
mean ± std; their CIs are "n/a" and a note says why; a missing or damaged file is named in a note.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mtl_robust.report.directions import (
    DGBA,
    TOTAL,
    direction_label,
    direction_sort_key,
    direction_style,
    spec_of,
)
from mtl_robust.report.models import INDEPENDENT
from mtl_robust.report.order import (
    defense_sort_key,
    family_attack_order,
    layout_order,
    layout_ranks,
    method_sort_key,
)
from mtl_robust.report.records import Record
from mtl_robust.report.seeds import Analysis, Group, ci, group_mean, pm
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import eps_slug, format_eps, to_pixels

if TYPE_CHECKING:  # the statistics need torch: imported where they are computed, not with the report
    from mtl_robust.evaluation.stats import Bootstrap, Estimate


@dataclass
class Comparison:
    kind: str  # "DGBA vs TOTAL", ...
    a: str
    b: str
    context: dict[str, Any]  # data, backbone, defense, layout, method, eps
    estimate: Estimate
    better: str  # what a negative difference means: "stronger" (attacks) or "less robust" (models)

    def verdict(self) -> str:
        est = self.estimate
        if not (math.isfinite(est.low) and math.isfinite(est.high)):
            return "no CI (no per-image statistics)"
        if not est.significant:
            return "no significant difference"
        if self.better == "stronger":
            return f"{self.a} stronger" if est.high < 0 else f"{self.b} stronger"
        return f"{self.a} more robust" if est.low > 0 else f"{self.b} more robust"


class GroupKey(NamedTuple):
    """Where a seed group sits: a model (store, family, layout) under one attack (method, eps, direction)."""

    store: str
    data: str
    backbone: str
    defense: str
    layout: str
    method: str
    eps_key: float
    direction: str

    @classmethod
    def of(cls, record: Record) -> GroupKey:
        return cls(
            record.store,
            record.data,
            record.backbone,
            record.defense,
            record.layout_name,
            record.method,
            record.eps_key,
            record.direction,
        )

    def differs_only_in_direction(self, other: GroupKey) -> bool:
        return self._replace(direction=other.direction) == other


class LayoutCell(NamedTuple):
    """The layouts of one model family under one attack: what the layout comparison compares."""

    store: str
    data: str
    backbone: str
    defense: str
    method: str
    eps_key: float
    direction: str


# The paper's paired comparisons (table titles and file names).
DGBA_VS_TOTAL = f"{DGBA.label} vs {TOTAL.label}"
DGBA_VS_SINGLE = f"{DGBA.label} vs best SINGLE"
LAYOUT_VS_LAYOUT = "layout vs layout"
AT_VS_CLEAN = "AT vs clean model"


def _index(groups: Sequence[Group]) -> dict[GroupKey, Group]:
    return {GroupKey.of(g.first): g for g in groups}


def comparisons(groups: Sequence[Group], bootstrap: Bootstrap) -> list[Comparison]:
    """The paper's paired comparisons among the groups present."""
    from mtl_robust.evaluation.stats import Estimate

    index = _index(groups)
    out: list[Comparison] = []

    def add(kind: str, a: Group, b: Group, a_name: str, b_name: str, context: dict, better: str) -> None:
        if not (a.cells and b.cells and a.tasks is not None):
            est = Estimate(group_mean(a) - group_mean(b), math.nan, math.nan, math.nan, 0, 0)
        else:
            shared = {c.seed for c in a.cells} & {c.seed for c in b.cells}
            if not shared:
                return
            est = bootstrap.paired(a.cells, b.cells, a.tasks)
        out.append(Comparison(kind, a_name, b_name, context, est, better))

    for key, g in index.items():
        context = {
            "data": key.data,
            "backbone": key.backbone,
            "defense": key.defense,
            "layout": key.layout,
            "method": key.method,
            "eps": g.first.eps,
        }
        if spec_of(key.direction) == DGBA:
            total = index.get(key._replace(direction=str(TOTAL)))
            if total is not None:
                add(DGBA_VS_TOTAL, g, total, DGBA.label, TOTAL.label, context, "stronger")
            singles = {
                k.direction: v
                for k, v in index.items()
                if k.differs_only_in_direction(key) and _per_task(k.direction)
            }
            if singles:
                strongest = min(singles, key=lambda direction: group_mean(singles[direction]))
                add(
                    DGBA_VS_SINGLE,
                    g,
                    singles[strongest],
                    DGBA.label,
                    direction_label(strongest),
                    context,
                    "stronger",
                )
        if key.defense != "none":
            plain = index.get(key._replace(defense="none"))
            if plain is not None:
                ctx = {**context, "direction": direction_label(key.direction)}
                add(AT_VS_CLEAN, g, plain, key.defense, "none", ctx, "robust")
    # Layouts: each against the reference (independent where present, else the first in sharing order).
    by_cell: dict[LayoutCell, dict[str, Group]] = defaultdict(dict)
    for key, g in index.items():
        cell = LayoutCell(
            key.store, key.data, key.backbone, key.defense, key.method, key.eps_key, key.direction
        )
        by_cell[cell][key.layout] = g
    for cell, layouts in by_cell.items():
        if len(layouts) < 2:
            continue
        order = [name for name, _ in layout_order([g.first for g in layouts.values()])]
        reference = INDEPENDENT if INDEPENDENT in layouts else order[0]
        for name in order:
            if name == reference:
                continue
            g = layouts[name]
            context = {
                "data": cell.data,
                "backbone": cell.backbone,
                "defense": cell.defense,
                "layout": f"{name} vs {reference}",
                "method": cell.method,
                "eps": g.first.eps,
                "direction": direction_label(cell.direction),
            }
            add(LAYOUT_VS_LAYOUT, g, layouts[reference], name, reference, context, "robust")
    return out


def _per_task(direction: str) -> bool:
    spec = spec_of(direction)
    return spec is not None and spec.per_task


class SeedTableKey(NamedTuple):
    """One table of seed groups: a model family of one store under one method and eps."""

    store: str
    data: str
    backbone: str
    defense: str
    method: str
    eps_key: float

    def sort_key(self) -> tuple:
        return (
            self.store,
            *family_attack_order(self.data, self.backbone, self.defense, self.method),
            self.eps_key,
        )


def uncertainty_tables(analysis: Analysis) -> tuple[list[Table], list[Table]]:
    """(seed tables, comparison tables)."""
    groups, bootstrap = analysis.groups, analysis.bootstrap
    estimates = {id(g): e for g, e in zip(analysis.groups, analysis.estimates)}
    by_table: dict[SeedTableKey, list[Group]] = defaultdict(list)
    for g in groups:
        r = g.first
        by_table[SeedTableKey(r.store, r.data, r.backbone, r.defense, r.method, r.eps_key)].append(g)
    seed_tables = []
    for key in sorted(by_table, key=SeedTableKey.sort_key):
        rows_in = by_table[key]
        eps = rows_in[0].first.eps
        rank = layout_ranks([g.first for g in rows_in])
        rows = []
        for g in sorted(
            rows_in, key=lambda g: (rank[g.first.layout_name], direction_sort_key(g.first.direction))
        ):
            est = estimates[id(g)]
            rows.append(
                [g.first.layout_name, direction_label(g.first.direction), len(g.records), pm(est), ci(est)]
            )
        seed_tables.append(
            Table(
                name=slug("seeds", key.data, key.backbone, key.defense, key.method, eps_slug(eps)),
                title=(
                    f"{key.data} · {key.backbone} · defense {key.defense} · {key.method.upper()} "
                    f"ε={format_eps(eps)}"
                ),
                columns=["layout", "direction", "seeds", "avg (%) mean ± std", "95 % CI (%)"],
                rows=rows,
                description=(
                    "The paper's measure (mean over tasks of the relative change, %) averaged over seeds; "
                    "± is the standard deviation over seeds; the 95 % CI combines the seed spread with a "
                    "bootstrap over the evaluated images (docs/statistics.md)."
                ),
            )
        )
    comps = comparisons(groups, bootstrap)
    by_kind: dict[str, list[Comparison]] = defaultdict(list)
    for c in comps:
        by_kind[c.kind].append(c)
    comp_tables = []
    for kind in (DGBA_VS_TOTAL, DGBA_VS_SINGLE, LAYOUT_VS_LAYOUT, AT_VS_CLEAN):
        items = by_kind.get(kind)
        if not items:
            continue
        items.sort(key=_comparison_order)
        rows = []
        for c in items:
            ctx = c.context
            rows.append(
                [
                    ctx["data"],
                    ctx["defense"],
                    ctx["layout"],
                    ctx["method"],
                    format_eps(ctx["eps"]),
                    ctx.get("direction", ""),
                    f"{c.a} − {c.b}",
                    c.estimate.num_seeds,
                    100 * c.estimate.mean,
                    ci(c.estimate),
                    c.verdict(),
                ]
            )
        comp_tables.append(
            Table(
                name=slug("paired", kind),
                title=f"Paired comparison: {kind}",
                columns=[
                    "data",
                    "defense",
                    "layout",
                    "method",
                    "ε",
                    "direction",
                    "difference",
                    "seeds",
                    "Δ avg (pp)",
                    "95 % CI (pp)",
                    "verdict",
                ],
                rows=rows,
                description=_COMPARISON_TEXT[kind],
            )
        )
    return seed_tables, comp_tables


_COMPARISON_TEXT = {
    DGBA_VS_TOTAL: (
        "Difference of the paper's measure (percentage points) on the same images and seeds; negative = DGBA "
        "hurts more. A difference is significant when its paired 95 % CI excludes 0."
    ),
    DGBA_VS_SINGLE: (
        "DGBA against the SINGLE attack with the lowest mean measure of that cell (chosen on the same data, "
        "so slightly favouring SINGLE); negative = DGBA hurts more."
    ),
    LAYOUT_VS_LAYOUT: (
        "Each layout against the reference (independent, else the most shared); positive = the first layout "
        "loses less under the same attack. Different models, same images and seed numbers."
    ),
    AT_VS_CLEAN: (
        "Adversarially trained against clean model of the same layout under the same attack (each against "
        "its own clean metrics); positive = the trained model loses less."
    ),
}


def _comparison_order(c: Comparison) -> tuple:
    ctx = c.context
    return (
        ctx["data"],
        defense_sort_key(ctx["defense"]),
        str(ctx["layout"]),
        method_sort_key(ctx["method"]),
        ctx["eps"],
        str(ctx.get("direction", "")),
    )


# ----------------------------------------------------------------------------------------- eps bands
class BandPoint(NamedTuple):
    """One budget of a CI band: the mean over seeds and its 95 % CI, as fractions."""

    eps: float
    mean: float
    low: float
    high: float


class BandKey(NamedTuple):
    """One CI-band figure: a model (store, family, layout) under one method."""

    store: str
    data: str
    backbone: str
    defense: str
    layout: str
    method: str


def eps_band_series(analysis: Analysis) -> dict[BandKey, dict[str, list[BandPoint]]]:
    """Per model and method: {direction: points sorted by eps}."""
    out: dict[BandKey, dict[str, list[BandPoint]]] = defaultdict(lambda: defaultdict(list))
    for g, est in zip(analysis.groups, analysis.estimates):
        r = g.first
        key = BandKey(r.store, r.data, r.backbone, r.defense, r.layout_name, r.method)
        out[key][r.direction].append(BandPoint(r.eps, est.mean, est.low, est.high))
    return {k: {d: sorted(v) for d, v in series.items()} for k, series in out.items()}


def plot_eps_bands(series: Mapping[str, list[BandPoint]], title: str, path: Path) -> Path:
    """Average measure vs eps, one line per direction (in its registered colour) with its 95 % CI as a
    shaded band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    for i, direction in enumerate(sorted(series, key=direction_sort_key)):
        pts = series[direction]
        xs = [to_pixels(p.eps) for p in pts]
        colour = direction_style(direction, i)["color"]
        label = direction_label(direction)
        ax.plot(xs, [100 * p.mean for p in pts], marker="o", color=colour, label=label)
        lows, highs = [100 * p.low for p in pts], [100 * p.high for p in pts]
        if all(math.isfinite(v) for v in lows + highs):
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.18, linewidth=0)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("ε (pixel units, /255)")
    ax.set_ylabel("average relative change (%)\nmean over seeds, 95 % CI band")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def uncertainty_sections(
    records: Sequence[Record], summary: Any, tables_dir: Path, plots_dir: Path
) -> list[str]:
    """The report's seed and comparison sections (markdown), written through the summary's helpers."""
    analysis = Analysis.of(records)
    seed_tables, comp_tables = uncertainty_tables(analysis)
    summary.notes += analysis.notes
    part = ["## Over seeds: mean ± std and 95 % CI", ""]
    part += [summary.table(t, tables_dir) for t in seed_tables] or ["No successful attack rows.\n"]
    for key, series in eps_band_series(analysis).items():
        if max(len(v) for v in series.values()) < 2:
            continue  # one budget: nothing to draw a curve through
        name = slug("ci_bands", key.store, key.data, key.backbone, key.defense, key.layout, key.method)
        title = f"{key.method.upper()} on {key.layout} · defense {key.defense} · {key.data}/{key.backbone}"
        part.append(summary.image(plot_eps_bands(series, title, plots_dir / f"{name}.png"), title))
    comp = ["## Paired comparisons", ""]
    comp += [summary.table(t, tables_dir) for t in comp_tables] or ["No comparable cells.\n"]
    return ["\n".join(part), "\n".join(comp)]
