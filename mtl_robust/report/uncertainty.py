"""Report sections with uncertainty: seeds aggregated (mean ± std, 95 % CI), paired comparisons, eps bands.

Cells that differ only by seed form one group. Its CI combines the spread over seeds with a bootstrap
over the evaluated images (`evaluation/stats.py`, docs/statistics.md), from the per-image statistics files
the rows reference. The paired comparisons are the paper's: DGBA vs TOTAL, DGBA vs the strongest SINGLE,
each layout vs the reference layout, adversarially trained vs clean model; a difference is called
significant only when its CI excludes 0. Rows without per-image files (older stores) still get mean ± std;
their CIs are "n/a" and a note says why; a missing or damaged file is named in a note.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mtl_robust.report.directions import (
    DGBA,
    TOTAL,
    direction_label,
    direction_sort_key,
    direction_style,
    spec_of,
)
from mtl_robust.report.models import INDEPENDENT
from mtl_robust.report.order import defense_sort_key, layout_order, layout_ranks, method_sort_key
from mtl_robust.report.records import Record
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import eps_slug, format_eps, to_pixels

if TYPE_CHECKING:  # the statistics need torch: imported where they are computed, not with the report
    from mtl_robust.evaluation.per_image import Stats
    from mtl_robust.evaluation.stats import Bootstrap, Estimate, SeedCell
    from mtl_robust.tasks import Task

# Config fields that differ between the seeds of one cell, say where things are, or record what one training
# run measured about itself (its cost in passes and seconds): not part of a group.
SEED_FIELDS = ("seed", "train_seed", "model_id", "checkpoint", "deterministic", "training")


@dataclass
class Group:
    """The rows of one cell over seeds, with the per-image statistics of those that have them."""

    records: list[Record]
    cells: list[SeedCell]
    tasks: dict[str, Task] | None

    @property
    def first(self) -> Record:
        return self.records[0]

    def rel_avgs(self) -> list[float]:
        return [float(r.results["rel_avg"]) for r in self.records if _finite(r.results.get("rel_avg"))]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def row_seed(record: Record) -> int:
    """The seed a row stands for: its model's training seed (the run seed) where recorded."""
    value = record.config.get("train_seed", record.config.get("seed"))
    return int(value) if isinstance(value, int) else 0


def group_key(record: Record) -> tuple:
    config = {k: v for k, v in record.config.items() if k not in SEED_FIELDS}
    return (record.store, repr(sorted(config.items(), key=lambda kv: kv[0])))


class StatsLoader:
    """Loads side files once each; failures become notes naming the file."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes
        self._cache: dict[Path, tuple[Stats, dict] | None] = {}

    def load(self, path: Path) -> tuple[Stats, dict] | None:
        from mtl_robust.evaluation.per_image import PerImageError, load_stats

        if path not in self._cache:
            try:
                self._cache[path] = load_stats(path)
            except PerImageError as err:
                self.notes.append(f"{err}; its cells have no confidence interval")
                self._cache[path] = None
        return self._cache[path]

    def cell(self, record: Record) -> tuple[SeedCell, dict[str, Task]] | None:
        from mtl_robust.evaluation.per_image import header_tasks
        from mtl_robust.evaluation.stats import SeedCell

        side = record.results.get("per_image") or {}
        if not side.get("clean") or not side.get("adv"):
            return None
        clean = self.load(record.base_dir / side["clean"])
        adv = self.load(record.base_dir / side["adv"])
        if clean is None or adv is None:
            return None
        (clean_stats, _), (adv_stats, adv_header) = clean, adv
        return SeedCell(row_seed(record), clean_stats, adv_stats), header_tasks(adv_header)


def seed_groups(records: Sequence[Record], notes: list[str]) -> list[Group]:
    """Successful attack rows grouped over seeds, each with its per-image statistics where available."""
    loader = StatsLoader(notes)
    grouped: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.is_attack:
            grouped[group_key(r)].append(r)
    groups, without = [], 0
    for rows in grouped.values():
        by_seed: dict[int, Record] = {}
        for r in sorted(rows, key=lambda r: r.time):  # one row per seed: the latest
            if row_seed(r) in by_seed:
                notes.append(
                    f"cell {r.key}: several rows for seed {row_seed(r)} of the same cell (models "
                    f"{by_seed[row_seed(r)].text('model_id')} and {r.text('model_id')}); the latest counts"
                )
            by_seed[row_seed(r)] = r
        rows = [by_seed[seed] for seed in sorted(by_seed)]
        cells, tasks = [], None
        for r in rows:
            loaded = loader.cell(r)
            if loaded is None:
                without += 1
                continue
            cell, tasks = loaded
            cells.append(cell)
        groups.append(Group(rows, cells, tasks))
    if without:
        notes.append(
            f"{without} attack rows have no readable per-image statistics (stores written before per-image "
            "files existed, or files missing): their groups show mean ± std over seeds without CIs"
        )
    return groups


def estimate(group: Group, bootstrap: Bootstrap) -> Estimate:
    """Mean ± std over the rows' own measures; the CI from the bootstrap where statistics exist."""
    from mtl_robust.evaluation.stats import Estimate

    values = group.rel_avgs()
    mean = float(np.mean(values)) if values else math.nan
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    if group.cells and group.tasks is not None:
        boot = bootstrap.estimate(group.cells, group.tasks)
        return replace(boot, mean=mean, std=std, num_seeds=len(group.records))
    return Estimate(mean, std, math.nan, math.nan, len(group.records), 0)


# ------------------------------------------------------------------------------------------ tables
def pm(est: Estimate) -> str:
    """ "-56.4 ± 2.1" in percent (std over seeds; just the mean with one seed)."""
    if not math.isfinite(est.mean):
        return "n/a"
    if not math.isfinite(est.std):
        return f"{100 * est.mean:.2f}"
    return f"{100 * est.mean:.2f} ± {100 * est.std:.2f}"


def ci(est: Estimate) -> str:
    if not (math.isfinite(est.low) and math.isfinite(est.high)):
        return "n/a"
    return f"[{100 * est.low:.2f}, {100 * est.high:.2f}]"


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
            est = Estimate(_mean(a) - _mean(b), math.nan, math.nan, math.nan, 0, 0)
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
                strongest = min(singles, key=lambda direction: _mean(singles[direction]))
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


def _mean(g: Group) -> float:
    values = g.rel_avgs()
    return float(np.mean(values)) if values else math.nan


@dataclass
class Analysis:
    """Seed groups of a set of records with their estimates, computed once for tables and plots."""

    groups: list[Group]
    estimates: list[Estimate]
    bootstrap: Bootstrap
    notes: list[str]

    @classmethod
    def of(cls, records: Sequence[Record], replicates: int = 1000) -> Analysis:
        from mtl_robust.evaluation.stats import Bootstrap

        notes: list[str] = []
        groups = seed_groups(records, notes)
        bootstrap = Bootstrap(replicates)
        return cls(groups, [estimate(g, bootstrap) for g in groups], bootstrap, notes)


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
            self.data,
            self.backbone,
            defense_sort_key(self.defense),
            method_sort_key(self.method),
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
