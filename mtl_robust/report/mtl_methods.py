"""The multi-task methods section: how a model is trained (EW, UW, DWA, MGDA, PCGrad, ...) against what it
buys, "promise or illusion". Shown only when the rows carry more than one multi-task method.

Per data set, backbone and budget, one row per layout, defense and method, each a mean over the training
seeds with a 95 % t-interval over seeds (the seed is the unit: a model's numbers are one draw; the per-image
bootstrap is the seeds section's):

* clean Delta_p vs EW, LibMTL's measure: the mean over tasks and metrics of
  (-1)^{lower is better} (M - M_EW) / M_EW, in %, against the mean of the EW models of the same layout and
  defense (a metric whose EW value is 0 is left out);
* robustness: the relative change (%, negative = worse) under PGD-DGBA, PGD-WEIGHTED (TOTAL on the
  model's own training weights) and the per-image worst case of the ensemble;
* the illusion gap: PGD-DGBA's change minus the ensemble's, in percentage points: how much robustness PGD
  alone overstates (Ghamizi et al.'s "false sense of robustness" is a large gap);
* the diagnostics' flags over the method's seeds.

Verdicts (vs EW on the ensemble, paired by seed; the gap against 0) follow the paired comparisons' policy
(report/uncertainty.py): none from fewer than `min_seeds` seeds or from a flagged model (unless
`include_flagged`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtl_robust.report.flags import model_flags
from mtl_robust.report.records import Record, attack_eps, attack_eps_slug
from mtl_robust.report.summary import Summary
from mtl_robust.report.tables import Table
from mtl_robust.report.uncertainty import CONFIDENCE, DEFAULT_MIN_SEEDS
from mtl_robust.values.training import DEFAULT_MTL, TrainingProcedure

ENSEMBLE = "ensemble"
PGD_DIRECTIONS = ("dgba", "weighted")


@dataclass
class SeedModel:
    """One trained model (one seed) of one method: its clean metrics and the changes attacks made."""

    clean: dict[str, dict[str, float]] = field(default_factory=dict)
    higher_is_better: dict[str, dict[str, bool]] = field(default_factory=dict)
    pgd: dict[str, float] = field(default_factory=dict)  # direction -> rel_avg (%)
    ensemble: float = math.nan
    flags: set[str] = field(default_factory=set)

    @property
    def gap(self) -> float:
        return self.pgd.get("dgba", math.nan) - self.ensemble


# (store, data, backbone, eps key) -> (layout, defense) -> method -> seed -> model
Models = dict[tuple, dict[tuple[str, str], dict[str, dict[int, SeedModel]]]]


def _procedure(record: Record) -> TrainingProcedure | None:
    return TrainingProcedure.read(record.defense_name)


def mtl_methods_of(records: Sequence[Record]) -> set[str]:
    """The multi-task methods the rows' models were trained with."""
    return {p.mtl for p in map(_procedure, records) if p is not None}


def collect(records: Sequence[Record]) -> Models:
    """The rows regrouped by model: every L-inf attack row of a trained model with a known procedure."""
    out: Models = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for r in records:
        procedure = _procedure(r)
        seed = r.config.get("train_seed")
        if not (r.ok and r.is_attack and r.norm == "linf") or procedure is None or seed is None:
            continue
        where = (r.store, r.data, r.backbone, r.eps_key)
        position = (r.layout_name, str(procedure.defense))
        model = out[where][position][procedure.mtl].setdefault(int(seed), SeedModel())
        model.clean = model.clean or r.clean_metrics()
        hib = r.results.get("higher_is_better") or {}
        model.higher_is_better = model.higher_is_better or {t: dict(m) for t, m in hib.items()}
        model.flags |= set(model_flags(r))
        if r.method_name == ENSEMBLE:
            model.ensemble = r.rel_avg
        elif r.method_name == "pgd" and r.direction in PGD_DIRECTIONS:
            model.pgd[r.direction] = r.rel_avg
    return out


def delta_p(model: SeedModel, baseline: Mapping[str, Mapping[str, float]]) -> float:
    """LibMTL's Delta_p (%) of one model against the baseline's metrics (NaN without a common metric)."""
    terms = []
    for task, metrics in model.clean.items():
        for name, value in metrics.items():
            base = baseline.get(task, {}).get(name, math.nan)
            higher = model.higher_is_better.get(task, {}).get(name)
            if higher is None or not (math.isfinite(value) and math.isfinite(base)) or base == 0:
                continue
            terms.append((1.0 if higher else -1.0) * (value - base) / abs(base))
    return 100.0 * sum(terms) / len(terms) if terms else math.nan


def mean_metrics(models: Sequence[SeedModel]) -> dict[str, dict[str, float]]:
    """The per-metric mean over models (EW's seeds: the Delta_p baseline)."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for m in models:
        for task, metrics in m.clean.items():
            for name, value in metrics.items():
                if math.isfinite(value):
                    sums[task][name].append(value)
    return {t: {n: sum(v) / len(v) for n, v in ms.items()} for t, ms in sums.items()}


@dataclass(frozen=True)
class SeedMean:
    """A mean over seeds with its two-sided t-interval (NaN bounds from fewer than two seeds)."""

    mean: float
    low: float
    high: float
    num_seeds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> SeedMean:
        from scipy import stats as scipy_stats  # scipy comes with cvxpy; only where intervals are built

        finite = [v for v in values if math.isfinite(v)]
        n = len(finite)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = sum(finite) / n
        if n < 2:
            return cls(mean, math.nan, math.nan, n)
        sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
        half = float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
        return cls(mean, mean - half, mean + half, n)

    @property
    def significant(self) -> bool:
        return math.isfinite(self.low) and (self.low > 0 or self.high < 0)

    def text(self) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        if not math.isfinite(self.low):
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"


def verdict(
    estimate: SeedMean, flagged: str, min_seeds: int, include_flagged: bool, words: tuple[str, str]
) -> str:
    """The uncertainty policy's verdict on a difference: flagged (`flagged`: which model, "" for none) and
    too-few-seeds first, then its CI."""
    if flagged and not include_flagged:  # the flags themselves are in the table's flags column
        return f"excluded: {flagged}"
    if estimate.num_seeds < min_seeds:
        return f"too few seeds ({estimate.num_seeds} < {min_seeds}): no verdict"
    if not estimate.significant:
        return "no significant difference"
    return words[0] if estimate.mean > 0 else words[1]


COLUMNS = [
    "layout",
    "defense",
    "method",
    "seeds",
    "clean Δp vs EW (%)",
    "PGD-DGBA",
    "PGD-WEIGHTED",
    "ensemble",
    "illusion gap (pp)",
    "flags",
    "vs EW under the ensemble",
    "illusion",
]


def method_order(method: str) -> tuple[int, str]:
    from mtl_robust.mtl.methods import METHODS  # the config group's order; EW first

    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def methods_tables(
    records: Sequence[Record], min_seeds: int = DEFAULT_MIN_SEEDS, include_flagged: bool = False
) -> tuple[list[Table], list[str]]:
    """One table per data set, backbone and budget (see the module doc); notes on what could not be
    compared."""
    tables, notes = [], []
    for (store, data, backbone, eps_key), positions in sorted(collect(records).items(), key=str):
        rows = []
        for (layout, defense), methods in sorted(positions.items()):
            ew = methods.get(DEFAULT_MTL, {})
            if not ew:
                notes.append(f"mtl methods: no EW models for {data}/{backbone} {layout} {defense}: no Δp")
            baseline = mean_metrics(list(ew.values()))
            for method in sorted(methods, key=method_order):
                seeds = methods[method]
                models = [seeds[s] for s in sorted(seeds)]
                flags = sorted({f for m in models for f in m.flags})
                paired = sorted(set(seeds) & set(ew))
                vs_ew = SeedMean.of([seeds[s].ensemble - ew[s].ensemble for s in paired])
                ew_flags = sorted({f for s in paired for f in ew[s].flags})
                gap = SeedMean.of([m.gap for m in models])
                rows.append(
                    [
                        layout,
                        defense,
                        method,
                        len(models),
                        SeedMean.of([delta_p(m, baseline) for m in models]).text() if ew else "n/a",
                        SeedMean.of([m.pgd.get("dgba", math.nan) for m in models]).text(),
                        SeedMean.of([m.pgd.get("weighted", math.nan) for m in models]).text(),
                        SeedMean.of([m.ensemble for m in models]).text(),
                        gap.text(),
                        ", ".join(flags) or "-",
                        "(baseline)"
                        if method == DEFAULT_MTL
                        else verdict(
                            vs_ew,
                            "flagged model" if flags else ("flagged EW model" if ew_flags else ""),
                            min_seeds,
                            include_flagged,
                            ("more robust than EW", "less robust than EW"),
                        ),
                        verdict(
                            gap,
                            "flagged model" if flags else "",
                            min_seeds,
                            include_flagged,
                            ("PGD overstates robustness", "PGD understates robustness"),
                        ),
                    ]
                )
        budget = attack_eps(eps_key / 255, "pgd")
        tables.append(
            Table(
                name=f"mtl_methods_{data}_{backbone}_{attack_eps_slug(eps_key / 255, 'pgd')}"
                + (f"_{store}" if store else ""),
                title=f"Multi-task methods: {data} / {backbone}, ε {budget}",
                columns=COLUMNS,
                rows=rows,
                description=(
                    "Mean over seeds [95 % t-interval over seeds]; robustness columns: relative change "
                    "in % (negative = worse); illusion gap = PGD-DGBA minus ensemble."
                ),
            )
        )
    return tables, notes


def mtl_methods_section(
    records: Sequence[Record],
    render: Callable[[Table], str],
    min_seeds: int = DEFAULT_MIN_SEEDS,
    include_flagged: bool = False,
) -> tuple[str | None, list[str]]:
    """The section as markdown, or None when the rows carry fewer than two multi-task methods."""
    if len(mtl_methods_of([r for r in records if r.ok])) < 2:
        return None, []
    tables, notes = methods_tables(records, min_seeds, include_flagged)
    part = ["## Multi-task methods: promise or illusion", ""]
    part.append(
        "Each method against EW (equal weights) on the same layout and defense: clean Δp (LibMTL's "
        "measure), robustness under PGD-DGBA, PGD-WEIGHTED (the training weights) and the ensemble, and "
        "the illusion gap (how much robustness PGD alone overstates). Verdicts need "
        f"{min_seeds} seeds and unflagged models.\n"
    )
    part += [render(t) for t in tables] or ["No attack rows of trained models to compare.\n"]
    return "\n".join(part), notes


def mtl_methods_sections(
    records: Sequence[Record],
    summary: Summary,
    tables_dir: Path,
    min_seeds: int = DEFAULT_MIN_SEEDS,
    include_flagged: bool = False,
) -> list[str]:
    """`mtl_methods_section` as `write_report` adds it: its sections (none or one), its notes noted."""
    section, notes = mtl_methods_section(
        records, lambda t: summary.table(t, tables_dir), min_seeds, include_flagged
    )
    summary.notes += notes
    return [] if section is None else [section]
