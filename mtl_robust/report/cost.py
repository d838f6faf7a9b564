"""Report section: training cost against robustness, per layout (the fast adversarial training study).

Rows of checkpoints trained by this framework carry `config.training` (mtl_robust/lightning/
training_cost.py): forward+backward passes and wall time per training iteration and for the whole run, and
the catastrophic-overfitting watch's verdict. Costs are shown as ratios to the undefended (`none`) model of
the same layout in the same store and study, i.e. measured in the same sweep. Robustness is each model's
average relative change (%) under TOTAL and DGBA of one method and eps and, where the models were also
attacked by an ensemble, under its per-image worst case, with each fast variant's paired difference to
PGD-AT trained on adversarial examples only (95 % CI and verdict, from the report's paired comparisons).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from mtl_robust.evaluation.relative import compare
from mtl_robust.report.directions import DGBA, TOTAL, spec_of
from mtl_robust.report.flags import mark
from mtl_robust.report.order import defense_sort_key
from mtl_robust.report.records import Record, Sources, attack_eps, attack_eps_slug, num
from mtl_robust.report.seeds import position_row
from mtl_robust.report.tables import Table, slug
from mtl_robust.report.uncertainty import FAST_VS_PGD_AT
from mtl_robust.values.budget import same_eps
from mtl_robust.values.direction import DirectionSpec
from mtl_robust.values.norm import DEFAULT_NORM, label_norm, method_label

BASELINE = "none"
ENSEMBLE_METHOD = "ensemble"
PAPER_AT = "adv_train:pgd-total"


@dataclass
class CostRow:
    defense: str
    iterations: float
    passes_per_iteration: float
    pass_ratio: float  # per iteration, vs the undefended model
    time_ratio: float  # wall time per iteration, vs the undefended model
    run_pass_ratio: float  # whole training run, vs the undefended model
    run_time_ratio: float
    clean_change: float  # clean metrics vs the undefended model, % (mean over tasks)
    total: float  # average relative change under <method>-TOTAL, %
    dgba: float  # average relative change under <method>-DGBA, %
    dgba_vs_paper_at: float  # DGBA drop relative to PGD-AT's, % (positive = larger drop than PGD-AT)
    watch: str
    ensemble: float = math.nan  # average relative change under the ensemble's joint worst case, %
    vs_pgd_at: str = ""  # fast AT - PGD-AT (adv_only) under the ensemble: "Δ [CI]" (pp)
    vs_pgd_at_verdict: str = ""


@dataclass
class CostSet:
    """Cost and robustness of every defense of one layout."""

    source: str
    data: str
    backbone: str
    layout_name: str
    method: str
    eps: float
    rows: list[CostRow]

    @property
    def has_ensemble(self) -> bool:
        return any(math.isfinite(r.ensemble) for r in self.rows)

    @property
    def name(self) -> str:
        return slug(
            "cost",
            self.source,
            self.data,
            self.backbone,
            self.layout_name,
            self.method,
            attack_eps_slug(self.eps, self.method),
        )

    @property
    def title(self) -> str:
        prefix = f"{self.source} · " if self.source else ""
        return (
            f"Training cost vs robustness · {prefix}{self.data} · {self.backbone} · "
            f"layout {self.layout_name} · {self.method.upper()} ε={attack_eps(self.eps, self.method)}"
        )

    def table(self) -> Table:
        m = self.method.upper()
        ensemble = self.has_ensemble
        extra_columns = [ENSEMBLE_COLUMN, VS_PGD_AT_COLUMN, "verdict"] if ensemble else []
        return Table(
            name=self.name,
            title=self.title,
            columns=[
                "defense",
                "iterations",
                "passes/iter",
                "passes/iter ×clean",
                "time/iter ×clean",
                "run passes ×clean",
                "run time ×clean",
                "clean vs none (%)",
                f"{m}-{TOTAL.label} avg (%)",
                f"{m}-{DGBA.label} avg (%)",
                f"{DGBA.label} drop vs PGD-AT (%)",
                "overfitting watch",
                *extra_columns,
            ],
            rows=[
                [
                    r.defense,
                    int(r.iterations) if math.isfinite(r.iterations) else None,
                    r.passes_per_iteration,
                    r.pass_ratio,
                    r.time_ratio,
                    r.run_pass_ratio,
                    r.run_time_ratio,
                    r.clean_change,
                    r.total,
                    r.dgba,
                    r.dgba_vs_paper_at,
                    r.watch,
                    *([r.ensemble, r.vs_pgd_at, r.vs_pgd_at_verdict] if ensemble else []),
                ]
                for r in self.rows
            ],
            formats={"passes/iter": ".1f"},
            description=(
                "Cost: forward+backward passes and wall time per training iteration (one batch) and for the "
                f"whole run, as multiples of the `{BASELINE}` model of this layout trained in the same sweep "
                "(wall time is only comparable within one machine and run). Robustness: average relative "
                "change under attack (%, negative = worse, against the model's own clean metrics). "
                f"`{DGBA.label} drop vs PGD-AT` = {DGBA.label} avg / that of `{PAPER_AT}` - 1 "
                "(positive = a larger drop). "
                "The watch column says whether catastrophic overfitting was detected during training."
                + (ENSEMBLE_TEXT if ensemble else "")
            ),
        )


ENSEMBLE_COLUMN = "ensemble avg (%)"
VS_PGD_AT_COLUMN = "vs PGD-AT[adv_only], ensemble: Δ (pp) [95 % CI]"
ENSEMBLE_TEXT = (
    " `ensemble avg`: the per-image worst case over the ensemble's members (joint rule). Each fast variant "
    "is paired with `adv_train[adv_only]` of the same inner direction (adversarial examples only, one "
    "optimiser step per batch, as the fast variants take) on the same images under the ensemble: positive "
    "Δ = the fast variant loses less; the verdict is that of the paired comparison table (fast AT vs "
    "PGD-AT), which needs enough seeds for a verdict about a training procedure."
)


class CostKey(NamedTuple):
    """One cost table: the defenses of one layout."""

    source: str
    data: str
    backbone: str
    layout: str


def training_cost(record: Record) -> dict[str, Any]:
    training = record.config.get("training")
    cost = training.get("cost") if isinstance(training, dict) else None
    return cost if isinstance(cost, dict) else {}


def watch_verdict(record: Record) -> str:
    training = record.config.get("training")
    watch = training.get("co_watch") if isinstance(training, dict) else None
    if not isinstance(watch, dict):
        return "off"
    checks = int(num(watch.get("checks")) if math.isfinite(num(watch.get("checks"))) else 0)
    if watch.get("collapsed"):
        action = " (weights restored)" if watch.get("restored") else ""
        return f"collapse at {watch.get('collapse_at')}{action}, {checks} checks"
    return f"no collapse, {checks} checks"


def _ratio(value: float, base: float) -> float:
    return value / base if math.isfinite(value) and math.isfinite(base) and base > 0 else math.nan


def _relative_difference(value: float, reference: float) -> float:
    """value / reference - 1, in %; both are (negative) average changes, so positive = a larger drop."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.nan
    return 100 * (value / reference - 1)


def _clean_change(base: Record, value: Record) -> float:
    hib = value.results.get("higher_is_better") or {}
    base_clean, value_clean = base.clean_metrics(), value.clean_metrics()
    common = {
        t: {m: bool(h) for m, h in ms.items() if m in base_clean.get(t, {}) and m in value_clean.get(t, {})}
        for t, ms in hib.items()
        if t in base_clean and t in value_clean
    }
    common = {t: ms for t, ms in common.items() if ms}
    if not common:
        return math.nan
    return 100 * compare(base_clean, value_clean, common).average


def cost_sets(
    records: Sequence[Record],
    method: str | None = None,
    eps: float | None = None,
    comparisons: Sequence[Any] = (),
) -> tuple[list[CostSet], list[str]]:
    """One CostSet per threat model and (source, data, backbone, layout) whose rows carry training costs;
    `comparisons` (the report's paired comparisons) give the fast variants' difference to PGD-AT under the
    ensemble of the same norm.

    `method` (a label such as 'pgd' or 'pgd[l2]') picks one attack, and so one norm; by default every norm
    with rows gets its sets, each under PGD of that norm where it has rows (else its first method)."""
    notes: list[str] = []
    attacked = [
        r
        for r in records
        if r.ok and r.is_attack and training_cost(r) and spec_of(r.direction) in (TOTAL, DGBA)
    ]
    if not attacked:
        return [], notes
    if method is not None:
        chosen = [method]
    else:
        by_norm: dict[str, set[str]] = defaultdict(set)
        for r in attacked:
            by_norm[r.norm].add(r.method)
        chosen = []
        for norm in sorted(by_norm, key=lambda n: (n != DEFAULT_NORM, n)):  # L-inf first, as before norms
            pgd = method_label("pgd", norm)
            chosen.append(pgd if pgd in by_norm[norm] else sorted(by_norm[norm])[0])
    out: list[CostSet] = []
    for chosen_method in chosen:
        out += _cost_sets_of(records, attacked, chosen_method, eps, comparisons, notes)
    return out, notes


def _cost_sets_of(
    records: Sequence[Record],
    attacked: Sequence[Record],
    chosen_method: str,
    eps: float | None,
    comparisons: Sequence[Any],
    notes: list[str],
) -> list[CostSet]:
    """The cost sets under one attack (and so one norm); its ensemble is the ensemble of that norm."""
    sources = Sources.of(records)
    with_method = [r for r in attacked if r.method == chosen_method]
    if not with_method:
        notes.append(f"cost vs robustness: no {TOTAL.label}/{DGBA.label} rows with method {chosen_method}")
        return []
    ensemble_method = method_label(ENSEMBLE_METHOD, label_norm(chosen_method))
    chosen_eps = eps if eps is not None else max(r.eps for r in with_method)
    selected = [r for r in with_method if same_eps(r.eps, chosen_eps)]
    # layout -> defense -> direction -> rows
    groups: dict[CostKey, dict[str, dict[DirectionSpec, list[Record]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in selected:
        key = CostKey(sources.label(r), r.data, r.backbone, r.layout_name)
        groups[key][r.defense][spec_of(r.direction)].append(r)
    ensembles: dict[tuple[CostKey, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.method == ensemble_method and training_cost(r) and same_eps(r.eps, chosen_eps):
            ensembles[(CostKey(sources.label(r), r.data, r.backbone, r.layout_name), r.defense)].append(r)
    against_pgd_at = {
        (CostKey(sources.label(c.context["group"].first), *_where(c)), c.a): c
        for c in comparisons
        if c.kind == FAST_VS_PGD_AT
        and c.context["method"] == ensemble_method
        and same_eps(c.context["eps"], chosen_eps)
    }
    out = []
    for key in sorted(groups):
        by_defense = groups[key]
        prefix = f"cost vs robustness {' · '.join(key)}"
        latest = {
            d: {
                direction: position_row(rs, f"{prefix} / {d} / {direction}", notes)
                for direction, rs in cells.items()
            }
            for d, cells in by_defense.items()
        }
        base_rows = latest.get(BASELINE)
        if not base_rows:
            notes.append(
                f"cost vs robustness {' · '.join(part for part in key if part)}: no undefended "
                f"('{BASELINE}') model with a training cost; ratios are n/a"
            )
        base = next(iter(base_rows.values())) if base_rows else None
        base_cost = training_cost(base) if base else {}
        paper = (latest.get(PAPER_AT) or {}).get(DGBA)
        rows = []
        for defense in sorted(latest, key=defense_sort_key):
            cells = latest[defense]
            any_row = next(iter(cells.values()))
            cost = training_cost(any_row)
            dgba = cells[DGBA].rel_avg if DGBA in cells else math.nan
            ensemble_rows = ensembles.get((key, defense))
            where = f"cost vs robustness {' · '.join(key)} / {defense} / ensemble"
            ensemble = position_row(ensemble_rows, where, notes) if ensemble_rows else None
            paired = against_pgd_at.get((key, defense))
            rows.append(
                CostRow(
                    defense=mark(defense, any_row),  # ⚠ in the table and the legend
                    iterations=num(cost.get("iterations")),
                    passes_per_iteration=num(cost.get("passes_per_iteration")),
                    pass_ratio=_ratio(
                        num(cost.get("passes_per_iteration")), num(base_cost.get("passes_per_iteration"))
                    ),
                    time_ratio=_ratio(
                        num(cost.get("seconds_per_iteration")), num(base_cost.get("seconds_per_iteration"))
                    ),
                    run_pass_ratio=_ratio(
                        num(cost.get("forward_passes")) + num(cost.get("backward_passes")),
                        num(base_cost.get("forward_passes")) + num(base_cost.get("backward_passes")),
                    ),
                    run_time_ratio=_ratio(num(cost.get("seconds")), num(base_cost.get("seconds"))),
                    clean_change=_clean_change(base, any_row) if base is not None else math.nan,
                    total=cells[TOTAL].rel_avg if TOTAL in cells else math.nan,
                    dgba=dgba,
                    dgba_vs_paper_at=_relative_difference(dgba, paper.rel_avg if paper else math.nan),
                    watch=watch_verdict(any_row),
                    ensemble=ensemble.rel_avg if ensemble is not None else math.nan,
                    vs_pgd_at=_difference_text(paired) if paired is not None else "",
                    vs_pgd_at_verdict=paired.verdict() if paired is not None else "",
                )
            )
        out.append(
            CostSet(
                source=key.source,
                data=key.data,
                backbone=key.backbone,
                layout_name=key.layout,
                method=chosen_method,
                eps=chosen_eps,
                rows=rows,
            )
        )
    return out


def _where(comparison: Any) -> tuple[str, str, str]:
    ctx = comparison.context
    return ctx["data"], ctx["backbone"], ctx["layout"]


def _difference_text(comparison: Any) -> str:
    est = comparison.estimate
    if not math.isfinite(est.mean):
        return ""
    interval = (
        f" [{100 * est.low:+.2f}, {100 * est.high:+.2f}]"
        if math.isfinite(est.low) and math.isfinite(est.high)
        else " (no CI)"
    )
    return f"{100 * est.mean:+.2f}{interval}"


def defense_colours(defenses: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per defense, all distinct up to 20 (matplotlib's default cycle repeats after 10)."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(defenses))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def plot_cost_set(cs: CostSet, path: Path) -> Path:
    """x = whole-run training passes (× clean, log scale), y = average change under TOTAL and DGBA."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = defense_colours([r.defense for r in cs.rows])
    labelled: set[str] = set()
    for r in cs.rows:
        x = r.run_pass_ratio
        if not math.isfinite(x):
            continue
        label = r.defense if r.defense not in labelled else None
        labelled.add(r.defense)
        colour = colours[r.defense]
        ax.plot([x], [r.dgba], "o", markersize=8, label=label, color=colour)
        ax.plot([x], [r.total], "s", markersize=7, mfc="none", color=colour)
    ax.set_xscale("log")
    ax.set_xlabel("training cost: forward+backward passes of the run (× clean training)")
    ax.set_ylabel(f"avg relative change under {cs.method.upper()} (%)")
    ax.set_title(
        f"{cs.layout_name} · ● {DGBA.label}  □ {TOTAL.label} · ε={attack_eps(cs.eps, cs.method)}", fontsize=10
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_section(
    records: Sequence[Record],
    summary: Any,
    tables_dir: Path,
    plots_dir: Path,
    method: str | None = None,
    eps: float | None = None,
    comparisons: Sequence[Any] = (),
) -> str | None:
    """The report's cost-vs-robustness section (None when no row carries a training cost)."""
    sets, notes = cost_sets(records, method, eps, comparisons)
    summary.notes += notes
    if not sets:
        return None
    part = ["## Training cost vs robustness", ""]
    for cs in sets:
        png = plot_cost_set(cs, plots_dir / f"{cs.name}.png")
        part += [summary.image(png, cs.title), summary.table(cs.table(), tables_dir)]
    return "\n".join(part)
