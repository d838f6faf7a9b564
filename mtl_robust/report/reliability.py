"""Report section on reliable evaluation: single attacks vs the per-image worst case over an ensemble,
the per-task worst case, which member wins, and the gradient-masking diagnostics of every model.

Reads rows written by ensemble cells (`results["ensemble"]`, see `evaluation/ensemble_cell.py`) and the
`results["diagnostics"]` every row of a diagnosed model carries. `marked_layout` is what other tables use
to mark a model whose diagnostics tripped a flag.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from mtl_robust.report.flags import FLAG_MARK, marked_layout, model_flags
from mtl_robust.report.order import defense_sort_key, layout_ranks, ordered_tasks
from mtl_robust.report.records import Record, pct
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import eps_slug, format_eps


class EnsembleKey(NamedTuple):
    """One ensemble table: the models of one data and backbone at one eps."""

    data: str
    backbone: str
    eps_key: float


class DiagnosedModel(NamedTuple):
    store: str
    data: str
    backbone: str
    defense: str
    layout: str
    model_id: str

    def sort_key(self) -> tuple:
        return (self.data, self.backbone, defense_sort_key(self.defense), self.layout)


def _ensemble_rows(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r.ok and r.method == "ensemble" and r.results.get("ensemble")]


def _groups(rows: Sequence[Record]) -> dict[EnsembleKey, list[Record]]:
    groups: dict[EnsembleKey, list[Record]] = defaultdict(list)
    for r in rows:
        groups[EnsembleKey(r.data, r.backbone, r.eps_key)].append(r)
    return groups


def _model_order(rows: Sequence[Record]) -> list[Record]:
    rank = layout_ranks(rows)
    return sorted(rows, key=lambda r: (defense_sort_key(r.defense), rank.get(r.layout_name, 0)))


def members_vs_ensemble(records: Sequence[Record]) -> list[Table]:
    """Per (data, backbone, eps): each member's measure beside the ensemble's joint worst case and the gap."""
    tables = []
    for key, rows in sorted(_groups(_ensemble_rows(records)).items()):
        eps = rows[0].eps
        members = list(dict.fromkeys(m for r in rows for m in r.results["ensemble"]["members"]))
        columns = ["layout", "defense"] + [f"{m} (%)" for m in members]
        columns += ["strongest member", "ensemble joint (%)", "gap (pp)", "most joint wins"]
        body = []
        for r in _model_order(rows):
            ens = r.results["ensemble"]
            values = {m: pct(ens["members"].get(m, {}).get("rel_avg")) for m in members}
            finite = {m: v for m, v in values.items() if math.isfinite(v)}
            strongest = min(finite, key=finite.get) if finite else ""
            joint = pct(ens["rules"].get(ens.get("primary", "joint"), {}).get("rel_avg"))
            gap = finite[strongest] - joint if strongest and math.isfinite(joint) else math.nan
            wins = ens["wins"].get(ens.get("primary", "joint"), {})
            top = max(wins, key=wins.get) if wins else ""
            body.append(
                [marked_layout(r), r.defense]
                + [values[m] for m in members]
                + [strongest, joint, gap, f"{top} ({wins.get(top, 0)}/{sum(wins.values())})" if top else ""]
            )
        tables.append(
            Table(
                name=slug("ensemble", key.data, key.backbone, eps_slug(eps)),
                title=f"Members vs ensemble · {key.data} · {key.backbone} · ε={format_eps(eps)}",
                columns=columns,
                rows=body,
                description=(
                    "Each member's own measure (mean over tasks of the relative change, %), the per-image "
                    "joint worst case over all members, and the gap = strongest member − ensemble in "
                    "percentage points: how much the best single attack overestimates robustness."
                ),
            )
        )
    return tables


def per_task_worst_case(records: Sequence[Record]) -> list[Table]:
    """Per (data, backbone, eps): each task's worst case (rule task:<t>) vs its strongest single member."""
    tables = []
    for key, rows in sorted(_groups(_ensemble_rows(records)).items()):
        eps = rows[0].eps
        tasks = ordered_tasks(rows)
        columns = ["layout", "defense"]
        for t in tasks:
            columns += [f"{t} best member (%)", f"{t} worst case (%)", f"{t} most wins"]
        body = []
        for r in _model_order(rows):
            ens = r.results["ensemble"]
            line: list = [marked_layout(r), r.defense]
            for t in tasks:
                member_values = [pct((v.get("rel_task") or {}).get(t)) for v in ens["members"].values()]
                finite = [v for v in member_values if math.isfinite(v)]
                rule = ens["rules"].get(f"task:{t}", {})
                wins = ens["wins"].get(f"task:{t}", {})
                top = max(wins, key=wins.get) if wins else ""
                line += [min(finite) if finite else math.nan, pct((rule.get("rel_task") or {}).get(t)), top]
            body.append(line)
        tables.append(
            Table(
                name=slug("worst_task", key.data, key.backbone, eps_slug(eps)),
                title=f"Per-task worst case · {key.data} · {key.backbone} · ε={format_eps(eps)}",
                columns=columns,
                rows=body,
                description=(
                    "For each task: the strongest single member on that task, and the per-image worst case "
                    "for that task alone over all members (selection rule task:<t>), in %."
                ),
            )
        )
    return tables


def ranking_notes(records: Sequence[Record]) -> list[str]:
    """Does the ensemble change which direction, or which layout, looks most robust?"""
    notes = []
    rows = _ensemble_rows(records)
    for key, group in sorted(_groups(rows).items()):
        data, backbone, eps = key.data, key.backbone, format_eps(group[0].eps)
        for r in _model_order(group):
            ens = r.results["ensemble"]
            members = {m: pct(v.get("rel_avg")) for m, v in ens["members"].items()}
            finite = {m: v for m, v in members.items() if math.isfinite(v)}
            if finite:
                strongest = min(finite, key=finite.get)
                wins = ens["wins"].get(ens.get("primary", "joint"), {})
                top = max(wins, key=wins.get) if wins else strongest
                agree = "the same member" if top == strongest else f"mostly {top}"
                notes.append(
                    f"{data}/{backbone} ε={eps} {r.layout_name} ({r.defense}): strongest single member "
                    f"{strongest}; the joint worst case picks {agree}"
                )
        by_defense: dict[str, list[Record]] = defaultdict(list)
        for r in group:
            by_defense[r.defense].append(r)
        for defense, models in sorted(by_defense.items()):
            if len(models) < 2:
                continue
            members = sorted({m for r in models for m in r.results["ensemble"]["members"]})

            def most_robust(value: Callable[[Record], float], models: list[Record] = models) -> str:
                scored = [(value(r), r.layout_name) for r in models if math.isfinite(value(r))]
                return max(scored)[1] if scored else "?"

            ens_best = most_robust(lambda r: pct(r.results["ensemble"]["rules"]["joint"]["rel_avg"]))
            per_member = {
                m: most_robust(lambda r, m=m: pct(r.results["ensemble"]["members"].get(m, {}).get("rel_avg")))
                for m in members
            }
            differing = sorted(m for m, best in per_member.items() if best != ens_best)
            notes.append(
                f"{data}/{backbone} ε={eps} defense {defense}: most robust layout under the ensemble: "
                f"{ens_best}; "
                + (
                    f"members that rank another layout first: {', '.join(differing)}"
                    if differing
                    else "every single member agrees"
                )
            )
    return notes


def diagnostics_table(records: Sequence[Record]) -> tuple[Table | None, list[str]]:
    """One line per diagnosed model: its flags, zero-gradient shares and probe measures; a warning each."""
    models: dict[DiagnosedModel, Record] = {}
    for r in records:
        if r.ok and r.results.get("diagnostics"):
            key = DiagnosedModel(r.store, r.data, r.backbone, r.defense, r.layout_name, r.text("model_id"))
            models.setdefault(key, r)
    if not models:
        return None, []
    notes, body = [], []
    probes = ["pgd", "pgd_2eps", "apgd", "apgd_4x_steps", "noise", "apgd_eps1"]
    for key in sorted(models, key=DiagnosedModel.sort_key):
        r = models[key]
        d = r.results["diagnostics"]
        flags = model_flags(r)
        zero = d.get("zero_grad_fraction") or {}
        body.append(
            [marked_layout(r), r.defense, ", ".join(flags) or "none"]
            + [", ".join(f"{t} {v:.2f}" for t, v in zero.items())]
            + [pct((d.get("measures") or {}).get(p)) for p in probes]
        )
        if flags:
            notes.append(
                f"WARNING: model {r.layout_name} ({r.defense}, {r.data}) trips diagnostics "
                f"{', '.join(flags)}: attacks may be fooled (gradient masking), its numbers may overstate "
                "robustness"
            )
    table = Table(
        name="diagnostics",
        title="Gradient-masking and sanity diagnostics",
        columns=["layout", "defense", "flags", "zero-gradient share"] + [f"{p} (%)" for p in probes],
        rows=body,
        description=(
            "Per model, on a few batches: flags (see README), the share of exactly-zero input gradients per "
            "task, and the measure of each probe: PGD at ε and 2ε, APGD with the base and 4x steps, uniform "
            f"noise in the ε-ball, APGD at ε = 1. {FLAG_MARK} marks a flagged model in every table."
        ),
    )
    return table, notes


def reliability_section(
    records: Sequence[Record], render: Callable[[Table], str]
) -> tuple[str | None, list[str]]:
    """The report section as markdown (None when the records hold neither ensembles nor diagnostics)."""
    tables = members_vs_ensemble(records) + per_task_worst_case(records)
    diag, notes = diagnostics_table(records)
    if not tables and diag is None:
        return None, []
    part = ["## Reliable evaluation: single attacks vs the ensemble", ""]
    findings = ranking_notes(records)
    if findings:
        part += [f"- {n}" for n in findings] + [""]
    part += [render(t) for t in tables]
    if diag is not None:
        part.append(render(diag))
    return "\n".join(part), notes
