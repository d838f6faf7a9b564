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
from mtl_robust.report.flags import marked_layout, undertrained_flags
from mtl_robust.report.models import INDEPENDENT
from mtl_robust.report.order import (
    defense_sort_key,
    family_attack_order,
    layout_order,
    layout_ranks,
    method_sort_key,
)
from mtl_robust.report.records import Record
from mtl_robust.report.seeds import Analysis, Group, ci, group_mean, identity, identity_key, pm
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import eps_slug, format_eps, to_pixels

if TYPE_CHECKING:  # the statistics need torch: imported where they are computed, not with the report
    from mtl_robust.evaluation.stats import Bootstrap, Estimate


@dataclass
class Comparison:
    kind: str  # "DGBA vs TOTAL", ...
    a: str
    b: str
    context: dict[str, Any]  # data, backbone, defense, layout, method, eps (and the group compared)
    estimate: Estimate
    better: str  # what a negative difference means: "stronger" (attacks) or "less robust" (models)
    procedure: bool = False  # compares training procedures (different models), not attacks on one model
    min_seeds: int = 1  # fewer seeds: no verdict about a training procedure
    excluded: str = ""  # why no verdict is given although the data has a CI (an undertrained model)
    p_adjusted: float = math.nan  # within the comparison table's family (Holm)

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.estimate.low) and math.isfinite(self.estimate.high)

    @property
    def too_few_seeds(self) -> bool:
        return self.procedure and self.estimate.num_seeds < self.min_seeds

    @property
    def in_family(self) -> bool:
        """Gets a verdict, so counts in the table's multiplicity correction."""
        return self.has_ci and not self.excluded and not self.too_few_seeds

    def raw_decision(self) -> str:
        """Before the multiplicity correction: does the comparison's own 95 % CI exclude 0?"""
        if not self.has_ci:
            return "n/a"
        return "significant" if self.estimate.significant else "not significant"

    def verdict(self) -> str:
        est = self.estimate
        if not self.has_ci:
            return "no CI (no per-image statistics)"
        if self.excluded:
            return self.excluded
        if self.too_few_seeds:
            return f"too few seeds ({est.num_seeds} < {self.min_seeds}): no verdict"
        significant = (
            self.p_adjusted < 1.0 - CONFIDENCE if math.isfinite(self.p_adjusted) else est.significant
        ) and not est.negligible  # an interval that prints as [0.00, 0.00] is no verdict
        if not significant:
            return "no significant difference"
        if self.better == "stronger":
            winner = f"{self.a} stronger" if est.mean < 0 else f"{self.b} stronger"
        else:
            winner = f"{self.a} more robust" if est.mean > 0 else f"{self.b} more robust"
        if not self.procedure and est.num_seeds < self.min_seeds:
            winner += " (on these trained models)"
        return winner


CONFIDENCE = 0.95
DEFAULT_MIN_SEEDS = 3

# The paper's paired comparisons (table titles and file names).
DGBA_VS_TOTAL = f"{DGBA.label} vs {TOTAL.label}"
DGBA_VS_SINGLE = f"{DGBA.label} vs best SINGLE"
LAYOUT_VS_LAYOUT = "layout vs layout"
AT_VS_CLEAN = "AT vs clean model"
FAST_VS_PGD_AT = "fast AT vs PGD-AT"
# Comparisons of training procedures (different models): a verdict needs `min_seeds` seeds.
PROCEDURE_KINDS = (LAYOUT_VS_LAYOUT, AT_VS_CLEAN, FAST_VS_PGD_AT)
# Fast adversarial training methods (their defense names start with these) and the PGD-AT they are compared
# with: the one trained, like them, on adversarial examples only (one optimiser step per batch).
FAST_AT_PREFIXES = ("fgsm_rs", "n_fgsm", "free_at")
PGD_AT_LIKE_FAST = "adv_train[adv_only]:pgd-{direction}"
# Config fields that describe the layout: what a layout comparison swaps; every other field must agree.
LAYOUT_FIELDS = ("layout_name", "layout", "sharing_score", "shared_fraction")


class GroupKey(NamedTuple):
    """Where a seed group is shown: a model (store, family, layout) under one attack (method, eps,
    direction). Not an identity: groups that differ in other settings (steps, restarts, ...) share it."""

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


def pgd_at_like(defense: str) -> str | None:
    """The PGD-AT a fast defense is compared with: adversarial examples only, the same inner direction
    (`fgsm_rs[gradalign=0.2]:dgba` -> `adv_train[adv_only]:pgd-dgba`); None for other defenses."""
    method, _, direction = defense.partition(":")
    if not method.startswith(FAST_AT_PREFIXES) or not direction:
        return None
    return PGD_AT_LIKE_FAST.format(direction=direction)


def _without(group: Group, fields: Sequence[str]) -> tuple:
    """The group's identity with `fields` left out: groups sharing it differ only in those fields."""
    config = identity(group.first)
    return identity_key(group.first.store, {k: v for k, v in config.items() if k not in fields})


def _differing(groups: Sequence[Group], skip: Sequence[str] = ()) -> list[str]:
    """Config fields whose values differ among the groups (the swapped fields left out)."""
    configs = [identity(g.first) for g in groups]
    names = sorted({k for c in configs for k in c} - set(skip))
    return [k for k in names if len({repr(c.get(k)) for c in configs}) > 1]


def _settings(group: Group, fields: Sequence[str]) -> str:
    return ", ".join(f"{k}={group.first.config.get(k)}" for k in fields)


def comparisons(
    groups: Sequence[Group],
    bootstrap: Bootstrap,
    notes: list[str] | None = None,
    min_seeds: int = DEFAULT_MIN_SEEDS,
    include_flagged: bool = False,
) -> list[Comparison]:
    """The paper's paired comparisons among the groups present, each pairing two groups whose identity
    (every config field but the seed) differs only in the compared field."""
    from mtl_robust.evaluation.stats import Estimate

    notes = [] if notes is None else notes
    out: list[Comparison] = []

    def add(kind: str, a: Group, b: Group, a_name: str, b_name: str, context: dict, better: str) -> None:
        procedure = kind in PROCEDURE_KINDS
        flags = sorted({f for g in (a, b) for r in g.records for f in undertrained_flags(r)})
        excluded = (
            f"excluded: undertrained model ({', '.join(flags)})" if flags and not include_flagged else ""
        )
        if not (a.cells and b.cells and a.tasks is not None):
            est = Estimate(group_mean(a) - group_mean(b), math.nan, math.nan, math.nan, 0, 0)
        else:
            if not {c.seed for c in a.cells} & {c.seed for c in b.cells}:
                return
            try:
                est = bootstrap.paired(a.cells, b.cells, a.tasks)
            except ValueError as err:
                notes.append(f"{kind}: {a.first.key} vs {b.first.key} not compared: {err}")
                return
        out.append(Comparison(kind, a_name, b_name, context, est, better, procedure, min_seeds, excluded))

    def context_of(g: Group, **extra: Any) -> dict[str, Any]:
        r = g.first
        return {
            "data": r.data,
            "backbone": r.backbone,
            "defense": r.defense,
            "layout": r.layout_name,
            "method": r.method,
            "eps": r.eps,
            "group": g,
            **extra,
        }

    by_direction: dict[tuple, dict[str, Group]] = defaultdict(dict)
    by_defense: dict[tuple, dict[str, Group]] = defaultdict(dict)
    by_layout: dict[tuple, dict[str, list[Group]]] = defaultdict(lambda: defaultdict(list))
    for g in groups:
        by_direction[_without(g, ("direction",))][g.first.direction] = g
        by_defense[_without(g, ("defense",))][g.first.defense] = g
        by_layout[_without(g, LAYOUT_FIELDS)][g.first.layout_name].append(g)

    for family in by_direction.values():
        dgba = next((g for d, g in family.items() if spec_of(d) == DGBA), None)
        if dgba is None:
            continue
        total = family.get(str(TOTAL))
        if total is not None:
            add(DGBA_VS_TOTAL, dgba, total, DGBA.label, TOTAL.label, context_of(dgba), "stronger")
        else:
            _note_unpaired(DGBA_VS_TOTAL, dgba, "direction", str(TOTAL), groups, notes)
        singles = {d: g for d, g in family.items() if _per_task(d)}
        if singles:
            strongest = min(singles, key=lambda direction: group_mean(singles[direction]))
            add(
                DGBA_VS_SINGLE,
                dgba,
                singles[strongest],
                DGBA.label,
                direction_label(strongest),
                context_of(dgba),
                "stronger",
            )
    for family in by_defense.values():
        plain = family.get("none")
        for defense, g in family.items():
            if defense == "none":
                continue
            if plain is None:
                _note_unpaired(AT_VS_CLEAN, g, "defense", "none", groups, notes)
                continue
            ctx = context_of(g, direction=direction_label(g.first.direction))
            add(AT_VS_CLEAN, g, plain, defense, "none", ctx, "robust")
        for defense, g in family.items():
            reference = pgd_at_like(defense)
            if reference is None:
                continue
            if reference not in family:
                if any(d.startswith("adv_train") for d in family):
                    _note_unpaired(FAST_VS_PGD_AT, g, "defense", reference, groups, notes)
                continue
            ctx = context_of(g, direction=direction_label(g.first.direction))
            add(FAST_VS_PGD_AT, g, family[reference], defense, reference, ctx, "robust")
    # Layouts: each against the reference (independent where present, else the first in sharing order).
    for family in by_layout.values():
        for name, same_name in family.items():
            if len(same_name) > 1:
                notes.append(
                    f"{LAYOUT_VS_LAYOUT}: {len(same_name)} different layouts share the name {name!r} "
                    f"(they differ in {', '.join(_differing(same_name))}); not compared"
                )
        layouts = {name: gs[0] for name, gs in family.items() if len(gs) == 1}
        if len(layouts) < 2:
            continue
        order = [name for name, _ in layout_order([g.first for g in layouts.values()])]
        reference = INDEPENDENT if INDEPENDENT in layouts else order[0]
        for name in order:
            if name == reference:
                continue
            g = layouts[name]
            ctx = context_of(g, layout=f"{name} vs {reference}", direction=direction_label(g.first.direction))
            add(LAYOUT_VS_LAYOUT, g, layouts[reference], name, reference, ctx, "robust")
    _add_settings(out)
    return out


def _note_unpaired(
    kind: str, group: Group, field: str, wanted: str, groups: Sequence[Group], notes: list[str]
) -> None:
    """A visible note where a partner exists at the same table position but with other settings."""
    where = GroupKey.of(group.first)._replace(**{field: wanted})
    near = [g for g in groups if GroupKey.of(g.first) == where]
    if near:
        differing = _differing([group, *near], skip=(field,))
        notes.append(
            f"{kind}: {group.first.key} ({_settings(group, differing)}) has no {wanted} partner with the "
            f"same settings (the {wanted} rows differ in {', '.join(differing) or 'the key only'}); "
            "not compared"
        )


def _add_settings(items: list[Comparison]) -> None:
    """Comparisons that would print the same context get the settings that tell them apart."""
    by_context: dict[tuple, list[Comparison]] = defaultdict(list)
    for c in items:
        visible = tuple(repr(v) for k, v in sorted(c.context.items()) if k != "group")
        by_context[(c.kind, visible)].append(c)
    for same in by_context.values():
        if len(same) < 2:
            continue
        fields = _differing([c.context["group"] for c in same])
        for c in same:
            c.context["settings"] = _settings(c.context["group"], fields)


def adjust(items: Sequence[Comparison]) -> int:
    """Holm-adjust the p-values of the comparisons that get a verdict; returns the family size."""
    from mtl_robust.evaluation.stats import holm

    family = [c for c in items if c.in_family]
    for c, adjusted in zip(family, holm([c.estimate.p_value for c in family])):
        c.p_adjusted = adjusted
    return len(family)


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


def uncertainty_tables(
    analysis: Analysis,
    min_seeds: int = DEFAULT_MIN_SEEDS,
    include_flagged: bool = False,
    found: list[Comparison] | None = None,
) -> tuple[list[Table], list[Table]]:
    """(seed tables, comparison tables); notes about unpaired or uncomparable groups go to the analysis.
    `found`, when given, receives every comparison (other sections quote them)."""
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
        settings = _position_settings(rows_in)
        rows = []
        for g in sorted(
            rows_in, key=lambda g: (rank[g.first.layout_name], direction_sort_key(g.first.direction))
        ):
            est = estimates[id(g)]
            line = [marked_layout(g.first), direction_label(g.first.direction)]
            line += [settings[id(g)]] if any(settings.values()) else []
            rows.append(line + [len(g.records), pm(est), ci(est)])
        seed_tables.append(
            Table(
                name=slug("seeds", key.data, key.backbone, key.defense, key.method, eps_slug(eps)),
                title=(
                    f"{key.data} · {key.backbone} · defense {key.defense} · {key.method.upper()} "
                    f"ε={format_eps(eps)}"
                ),
                columns=["layout", "direction"]
                + (["settings"] if any(settings.values()) else [])
                + ["seeds", "avg (%) mean ± std", "95 % CI (%)"],
                rows=rows,
                description=(
                    "The paper's measure (mean over tasks of the relative change, %) averaged over seeds; "
                    "± is the standard deviation over seeds; the 95 % CI is a t-interval over the seeds "
                    "whose variance adds the image-bootstrap variance (docs/statistics.md)."
                ),
            )
        )
    comps = comparisons(groups, bootstrap, analysis.notes, min_seeds, include_flagged)
    if found is not None:
        found.extend(comps)
    by_kind: dict[str, list[Comparison]] = defaultdict(list)
    for c in comps:
        by_kind[c.kind].append(c)
    comp_tables = []
    for kind in (DGBA_VS_TOTAL, DGBA_VS_SINGLE, LAYOUT_VS_LAYOUT, AT_VS_CLEAN, FAST_VS_PGD_AT):
        items = by_kind.get(kind)
        if not items:
            continue
        items.sort(key=_comparison_order)
        family = adjust(items)
        with_settings = any(c.context.get("settings") for c in items)
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
                ]
                + ([ctx.get("settings", "")] if with_settings else [])
                + [
                    f"{c.a} − {c.b}",
                    c.estimate.num_seeds,
                    100 * c.estimate.mean,
                    ci(c.estimate),
                    c.estimate.p_value,
                    c.p_adjusted,
                    c.raw_decision(),
                    c.verdict(),
                ]
            )
        comp_tables.append(
            Table(
                name=slug("paired", kind),
                title=f"Paired comparison: {kind}",
                columns=["data", "defense", "layout", "method", "ε", "direction"]
                + (["settings"] if with_settings else [])
                + [
                    "difference",
                    "seeds",
                    "Δ avg (pp)",
                    "95 % CI (pp)",
                    "p",
                    "p (Holm)",
                    "raw decision",
                    "verdict",
                ],
                rows=rows,
                formats={"p": ".3g", "p (Holm)": ".3g"},
                description=_COMPARISON_TEXT[kind] + _family_text(kind, family, min_seeds),
            )
        )
    return seed_tables, comp_tables


def _position_settings(groups: Sequence[Group]) -> dict[int, str]:
    """Groups shown at the same (layout, direction) position: the settings that tell them apart."""
    by_position: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        by_position[(g.first.layout_name, g.first.direction)].append(g)
    out = {id(g): "" for g in groups}
    for same in by_position.values():
        if len(same) > 1:
            fields = _differing(same)
            out.update({id(g): _settings(g, fields) for g in same})
    return out


def _family_text(kind: str, family: int, min_seeds: int) -> str:
    procedure = kind in PROCEDURE_KINDS
    text = (
        f" Multiplicity: Holm over the {family} comparisons of this table that get a verdict (family size "
        f"{family}); the verdict uses the adjusted p, `raw decision` the comparison's own 95 % CI."
    )
    if procedure:
        text += (
            f" A verdict about a training procedure needs at least {min_seeds} seeds; with fewer the row "
            "shows the estimate and 'too few seeds'."
        )
    else:
        text += (
            f" Same trained models on both sides: with fewer than {min_seeds} seeds the verdict holds for "
            "these trained models only (conditional on the model), not for the training procedure."
        )
    return text + " Rows of undertrained models (⚠ undertrained:<task>) get no verdict."


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
    FAST_VS_PGD_AT: (
        "Each fast adversarial training variant against PGD-AT trained the same way (adversarial examples "
        "only, one optimiser step per batch, same epochs and inner direction) under the same attack; "
        "positive = the fast variant loses less. Does a fast variant match PGD-AT: a CI that contains 0 "
        "says the data cannot tell them apart, not that they are equal."
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
    records: Sequence[Record],
    summary: Any,
    tables_dir: Path,
    plots_dir: Path,
    min_seeds: int = DEFAULT_MIN_SEEDS,
    include_flagged: bool = False,
    found: list[Comparison] | None = None,
) -> list[str]:
    """The report's seed and comparison sections (markdown), written through the summary's helpers;
    `found` receives the comparisons."""
    analysis = Analysis.of(records)
    seed_tables, comp_tables = uncertainty_tables(analysis, min_seeds, include_flagged, found)
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
    verdicts = [row[-1] for t in comp_tables for row in t.rows]
    if verdicts and not any(v in CONCLUSIVE for v in map(_verdict_kind, verdicts)):
        comp.append(f"**{NO_CONCLUSIONS}**: {_why_no_conclusions(verdicts)}\n")
    comp += [summary.table(t, tables_dir) for t in comp_tables] or ["No comparable cells.\n"]
    return ["\n".join(part), "\n".join(comp)]


NO_CONCLUSIONS = "Pipeline check only, no conclusions"
CONCLUSIVE = ("winner", "no significant difference")


def _verdict_kind(verdict: str) -> str:
    if verdict.startswith(("too few seeds", "excluded", "no CI")):
        return verdict.split(" ", 1)[0]
    return "no significant difference" if verdict == "no significant difference" else "winner"


def _why_no_conclusions(verdicts: Sequence[str]) -> str:
    reasons = []
    if any(v.startswith("too few seeds") for v in verdicts):
        reasons.append("too few seeds for verdicts about training procedures")
    if any(v.startswith("excluded") for v in verdicts):
        reasons.append("undertrained models (no better than a trivial predictor)")
    if any(v.startswith("no CI") for v in verdicts):
        reasons.append("no per-image statistics")
    return "no comparison gets a verdict (" + "; ".join(reasons) + ")."
