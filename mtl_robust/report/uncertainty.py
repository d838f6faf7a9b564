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
from mtl_robust.report.flags import marked_layout, model_flags
from mtl_robust.report.models import INDEPENDENT
from mtl_robust.report.order import (
    defense_sort_key,
    family_attack_order,
    layout_order,
    layout_ranks,
    method_sort_key,
)
from mtl_robust.report.records import Record, attack_eps, attack_eps_slug
from mtl_robust.report.seeds import Analysis, Group, ci, group_mean, identity, identity_without, pm
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import eps_axis, eps_axis_title
from mtl_robust.values.norm import DEFAULT_NORM, label_norm
from mtl_robust.values.recipe import DEFENSE_PREFIXES, LAYOUT_PREFIXES, differing_settings, format_settings
from mtl_robust.values.training import DefenseSpec, TrainingProcedure

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
    excluded: str = ""  # why no verdict is given although the data has a CI (a flagged model)
    p_adjusted: float = math.nan  # within the report's family of verdicts (Holm)
    # Procedures only: what the two models keep under attack, like with like (relative difference of their
    # metrics under attack; positive = a better). The verdict rests on it; the paper's measure is shown.
    under_attack: Estimate | None = None

    @property
    def decisive(self) -> Estimate:
        """The estimate the verdict rests on."""
        return self.under_attack if self.under_attack is not None else self.estimate

    @property
    def has_ci(self) -> bool:
        est = self.decisive
        return math.isfinite(est.low) and math.isfinite(est.high)

    @property
    def too_few_seeds(self) -> bool:
        needed = self.min_seeds if self.procedure else MIN_SEEDS_ATTACKS
        return self.decisive.num_seeds < needed

    @property
    def in_family(self) -> bool:
        """Gets a verdict, so counts in the table's multiplicity correction."""
        return self.has_ci and not self.excluded and not self.too_few_seeds

    def raw_decision(self) -> str:
        """Before the multiplicity correction: does the comparison's own 95 % CI exclude 0?"""
        if not self.has_ci:
            return "n/a"
        return "significant" if self.decisive.significant else "not significant"

    def verdict(self) -> str:
        est = self.decisive
        if not self.has_ci:
            return "no CI (no per-image statistics)"
        if self.excluded:
            return self.excluded
        if self.too_few_seeds:
            if not self.procedure:
                return (
                    f"too few seeds ({est.num_seeds} < {MIN_SEEDS_ATTACKS}): no verdict (one trained model: "
                    "the interval covers image noise only)"
                )
            return f"too few seeds ({est.num_seeds} < {self.min_seeds}): no verdict"
        significant = (
            self.p_adjusted < 1.0 - CONFIDENCE if math.isfinite(self.p_adjusted) else est.significant
        ) and not est.negligible  # an interval that prints as [0.00, 0.00] is no verdict
        if not significant:
            return "no significant difference"
        if self.better == "stronger":
            return f"{self.a} stronger" if est.mean < 0 else f"{self.b} stronger"
        what = "better under attack" if self.under_attack is not None else "more robust"
        return f"{self.a} {what}" if est.mean > 0 else f"{self.b} {what}"


CONFIDENCE = 0.95
DEFAULT_MIN_SEEDS = 3
# Attack-vs-attack verdicts (same models on both sides) need 2 seeds: with one, the interval covers the
# image noise of that one model only (simulated coverage 0.92-0.95 for it, and 23-35 % false verdicts
# about the procedure); docs/statistics.md.
MIN_SEEDS_ATTACKS = 2

# The paper's paired comparisons (table titles and file names).
DGBA_VS_TOTAL = f"{DGBA.label} vs {TOTAL.label}"
DGBA_VS_SINGLE = f"{DGBA.label} vs best SINGLE"
LAYOUT_VS_LAYOUT = "layout vs layout"
AT_VS_CLEAN = "AT vs clean model"
FAST_VS_PGD_AT = "fast AT vs PGD-AT"
# Comparisons of training procedures (different models): a verdict needs `min_seeds` seeds.
PROCEDURE_KINDS = (LAYOUT_VS_LAYOUT, AT_VS_CLEAN, FAST_VS_PGD_AT)
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
    """The PGD-AT a fast defense is compared with: trained, like it, on adversarial examples only (one
    optimiser step per batch) with the same inner direction and multi-task method
    (`fgsm_rs[gradalign=0.2]:dgba` -> `adv_train[adv_only]:pgd-dgba`); None for other defenses."""
    procedure = TrainingProcedure.read(defense)
    reference = procedure.defense.pgd_at_like() if procedure is not None else None
    return None if reference is None else str(procedure.with_defense(reference))


def clean_counterpart(defense: str) -> str:
    """The clean training an adversarially trained model is compared with: no defense, the same
    multi-task method (`adv_train:pgd-total+pcgrad` -> `none+pcgrad`; `none` for an unreadable name)."""
    procedure = TrainingProcedure.read(defense)
    return "none" if procedure is None else str(procedure.with_defense(DefenseSpec()))


def _is_pgd_at(defense: str) -> bool:
    procedure = TrainingProcedure.read(defense)
    return procedure is not None and procedure.defense.is_pgd_at


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
        flags = sorted({f for g in (a, b) for r in g.records for f in model_flags(r)})
        excluded = f"excluded: flagged model ({', '.join(flags)})" if flags and not include_flagged else ""
        under_attack = None
        if not (a.cells and b.cells and a.tasks is not None):
            est = Estimate(group_mean(a) - group_mean(b), math.nan, math.nan, math.nan, 0, 0)
        else:
            seeds_a, seeds_b = {c.seed for c in a.cells}, {c.seed for c in b.cells}
            if not seeds_a & seeds_b:
                notes.append(
                    f"{kind}: {a_name} ({a.first.key}, seeds {sorted(seeds_a)}) and {b_name} ({b.first.key}, "
                    f"seeds {sorted(seeds_b)}) share no seed number; not compared (a paired comparison "
                    "needs both models of a seed)"
                )
                return
            try:
                est = bootstrap.paired(a.cells, b.cells, a.tasks)
                if procedure:
                    under_attack = bootstrap.paired_adversarial(a.cells, b.cells, a.tasks)
            except ValueError as err:
                notes.append(f"{kind}: {a.first.key} vs {b.first.key} not compared: {err}")
                return
        out.append(
            Comparison(
                kind,
                a_name,
                b_name,
                context,
                est,
                better,
                procedure,
                min_seeds,
                excluded,
                under_attack=under_attack,
            )
        )

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
        by_direction[identity_without(g.first, ("direction",))][g.first.direction] = g
        by_defense[identity_without(g.first, ("defense",), DEFENSE_PREFIXES)][g.first.defense] = g
        by_layout[identity_without(g.first, LAYOUT_FIELDS, LAYOUT_PREFIXES)][g.first.layout_name].append(g)

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
            strongest = min(singles, key=lambda d: _nan_last(group_mean(singles[d]), direction_sort_key(d)))
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
        for defense, g in family.items():
            clean = clean_counterpart(g.first.defense_name)
            if clean == g.first.defense_name:
                continue
            plain = next((h for h in family.values() if h.first.defense_name == clean), None)
            if plain is None:
                _note_unpaired(AT_VS_CLEAN, g, "defense", clean, groups, notes)
                continue
            ctx = context_of(g, direction=direction_label(g.first.direction))
            add(AT_VS_CLEAN, g, plain, defense, plain.first.defense, ctx, "robust")
        for defense, g in family.items():
            reference = pgd_at_like(g.first.defense_name)
            if reference is None:
                continue
            matches = [(d, h) for d, h in family.items() if h.first.defense_name == reference]
            if len(matches) != 1:
                if matches:
                    notes.append(
                        f"{FAST_VS_PGD_AT}: {defense} has {len(matches)} {reference} models trained "
                        f"differently ({', '.join(d for d, _ in matches)}); not compared"
                    )
                elif any(_is_pgd_at(h.first.defense_name) for h in family.values()):
                    _note_unpaired(FAST_VS_PGD_AT, g, "defense", reference, groups, notes)
                continue
            ctx = context_of(g, direction=direction_label(g.first.direction))
            add(FAST_VS_PGD_AT, g, matches[0][1], defense, matches[0][0], ctx, "robust")
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


def _nan_last(value: float, order: Any) -> tuple:
    """Sort key: NaN after every number, ties broken by `order` (not by the rows' order)."""
    return (math.isnan(value), 0.0 if math.isnan(value) else value, order)


def _note_unpaired(
    kind: str, group: Group, field: str, wanted: str, groups: Sequence[Group], notes: list[str]
) -> None:
    """A visible note where a partner exists at the same table position (the same defense name, whatever
    recipe) but with other settings; differing recipes are named by their differing settings."""

    def position(g: Group) -> GroupKey:
        return GroupKey.of(g.first)._replace(defense=g.first.defense_name)

    where = position(group)._replace(**{field: wanted})
    near = [g for g in groups if position(g) == where]
    if near:
        differing = _differing([group, *near], skip=(field, "defense"))
        described = [k for k in differing if k != "recipe_id"]
        own = _settings(group, described)
        recipes = [g.first.recipe for g in (group, *near)]
        if "recipe_id" in differing and all(r is not None for r in recipes):
            settings = differing_settings([r for r in recipes if r is not None])
            described.append(f"training recipe ({', '.join(settings)})")
            own = ", ".join(x for x in (own, format_settings(recipes[0], settings)) if x)
        notes.append(
            f"{kind}: {group.first.key} ({own}) has no {wanted} partner with the "
            f"same settings (the {wanted} rows differ in {', '.join(described) or 'the key only'}); "
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
    """Holm-adjust the p-values of the comparisons that get a verdict, as one family (the report's every
    paired comparison: a report is read as a whole); returns the family size."""
    from mtl_robust.evaluation.stats import holm

    family = [c for c in items if c.in_family]
    for c, adjusted in zip(family, holm([c.decisive.p_value for c in family])):
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
                name=slug(
                    "seeds", key.data, key.backbone, key.defense, key.method, attack_eps_slug(eps, key.method)
                ),
                title=(
                    f"{key.data} · {key.backbone} · defense {key.defense} · {key.method.upper()} "
                    f"ε={attack_eps(eps, key.method)}"
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
    family = adjust(comps)  # one family for the whole report, every table's verdicts together
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
        with_settings = any(c.context.get("settings") for c in items)
        procedure = kind in PROCEDURE_KINDS
        rows = []
        for c in items:
            ctx = c.context
            rows.append(
                [
                    ctx["data"],
                    ctx["defense"],
                    ctx["layout"],
                    ctx["method"],
                    attack_eps(ctx["eps"], ctx["method"]),
                    ctx.get("direction", ""),
                ]
                + ([ctx.get("settings", "")] if with_settings else [])
                + [f"{c.a} − {c.b}", c.estimate.num_seeds, 100 * c.estimate.mean, ci(c.estimate)]
                + (
                    [_under_attack_mean(c), ci(c.under_attack) if c.under_attack else "n/a"]
                    if procedure
                    else []
                )
                + [c.decisive.p_value, c.p_adjusted, c.raw_decision(), c.verdict()]
            )
        comp_tables.append(
            Table(
                name=slug("paired", kind),
                title=f"Paired comparison: {kind}",
                columns=["data", "defense", "layout", "method", "ε", "direction"]
                + (["settings"] if with_settings else [])
                + ["difference", "seeds", "Δ avg (pp)", "95 % CI (pp)"]
                + (["Δ under attack (%)", "95 % CI (%)"] if procedure else [])
                + [
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


def _under_attack_mean(c: Comparison) -> float:
    return 100 * c.under_attack.mean if c.under_attack is not None else math.nan


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
        f" Multiplicity: Holm over all {family} paired comparisons of this report that get a verdict (one "
        "family for the report); the verdict uses the adjusted p, `raw decision` the comparison's own "
        "95 % CI."
    )
    if procedure:
        text += (
            " Two different models: the verdict rests on what each keeps under attack, like with like "
            "(`Δ under attack`: mean over tasks of the signed relative difference of the first model's "
            "metrics under attack against the second's; positive = the first is better under attack), not on "
            "the difference of their relative drops, which measures each from its own clean value. "
            f"A verdict about a training procedure needs at least {min_seeds} seeds; with fewer the row "
            "shows the estimates and 'too few seeds'."
        )
    else:
        text += (
            f" Same trained models on both sides: a verdict needs at least {MIN_SEEDS_ATTACKS} seeds (with "
            "one, the interval covers the image noise of one trained model only)."
        )
    return text + " Rows of flagged models (⚠: undertrained, gradient masking) get no verdict unless asked."


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


def plot_eps_bands(
    series: Mapping[str, list[BandPoint]], title: str, path: Path, norm: str = DEFAULT_NORM
) -> Path:
    """Average measure vs eps (on `norm`'s axis: `eps_axis`), one line per direction (in its registered
    colour) with its 95 % CI as a shaded band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    for i, direction in enumerate(sorted(series, key=direction_sort_key)):
        pts = series[direction]
        xs = [eps_axis(p.eps, norm) for p in pts]
        colour = direction_style(direction, i)["color"]
        label = direction_label(direction)
        ax.plot(xs, [100 * p.mean for p in pts], marker="o", color=colour, label=label)
        lows, highs = [100 * p.low for p in pts], [100 * p.high for p in pts]
        if all(math.isfinite(v) for v in lows + highs):
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.18, linewidth=0)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel(eps_axis_title(norm))
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
        part.append(
            summary.image(
                plot_eps_bands(series, title, plots_dir / f"{name}.png", label_norm(key.method)), title
            )
        )
    comp = ["## Paired comparisons", ""]
    verdicts = [row[-1] for t in comp_tables for row in t.rows]
    if verdicts and not any(v in CONCLUSIVE for v in map(_verdict_kind, verdicts)):
        comp.append(f"**{NO_CONCLUSIONS}**: {_why_no_conclusions(verdicts)}\n")
    comp += [summary.table(t, tables_dir) for t in comp_tables] or ["No comparable cells.\n"]
    return ["\n".join(part), "\n".join(comp)]


NO_CONCLUSIONS = "Pipeline check only, no conclusions"
CONCLUSIVE = ("winner", "no significant difference")


def _verdict_kind(verdict: str) -> str:
    if verdict.startswith(("too few seeds", "excluded", "no CI", "no verdict")):
        return verdict.split(":", 1)[0]
    return "no significant difference" if verdict == "no significant difference" else "winner"


def _why_no_conclusions(verdicts: Sequence[str]) -> str:
    reasons = []
    if any(v.startswith("too few seeds") for v in verdicts):
        reasons.append("too few seeds for verdicts")
    if any(v.startswith("excluded") for v in verdicts):
        reasons.append("flagged models (undertrained: no better than a trivial predictor; gradient masking)")
    if any(v.startswith("no CI") for v in verdicts):
        reasons.append("no per-image statistics")
    return "no comparison gets a verdict (" + "; ".join(reasons) + ")."
