"""Report section on reliable evaluation: single attacks vs the per-image worst case over an ensemble,
the per-task worst case, which member wins, and the gradient-masking diagnostics of every model.

Reads rows written by ensemble cells (`results["ensemble"]`, see `evaluation/ensemble_cell.py`) and the
`results["diagnostics"]` every row of a diagnosed model carries. `marked_layout` is what other tables use
to mark a model whose diagnostics tripped a flag. For a flagged model, `flagged_worst_case` says which
members found each rule's per-image worst case, whether they need the model's gradients, and the adaptive
options (`ADAPTIVE_OPTIONS`) their configs or the row record.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from mtl_robust.report.flags import FLAG_MARK, marked_layout, model_flags
from mtl_robust.report.order import defense_sort_key, layout_ranks, ordered_tasks, task_sort_key
from mtl_robust.report.records import Record, budget_label, pct
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import eps_slug
from mtl_robust.values.norm import DEFAULT_NORM

# Options that adapt an attack to a model whose gradients mislead (expectation over its randomness, a
# straight-through backward for a non-differentiable step): read from a member's config, or from the row's
# config when they apply to the whole cell, and shown beside the members of a flagged model's worst case.
ADAPTIVE_OPTIONS = ("eot_samples", "bpda")
# Methods that never use the model's gradients: what a flagged model's number should come from.
GRADIENT_FREE_METHODS = ("square",)


class EnsembleKey(NamedTuple):
    """One ensemble table: the models of one data and backbone under one threat model and eps (the
    ensembles of `attack=ensemble attack.norm=l2` get their own tables, never mixed with L-inf ones)."""

    data: str
    backbone: str
    norm: str
    eps_key: float

    def sort_key(self) -> tuple:
        return (self.data, self.backbone, self.norm != DEFAULT_NORM, self.norm, self.eps_key)

    def budget(self, eps: float) -> str:
        """'ε=8/255' under L-inf (as before norms existed); 'L2 ε=0.75' under another norm."""
        return budget_label(eps, self.norm)

    def slug_parts(self, eps: float) -> tuple[str, str]:
        """The norm (none for L-inf) and the budget, for table names."""
        return ("" if self.norm == DEFAULT_NORM else self.norm), eps_slug(eps, self.norm)


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
    return [r for r in records if r.ok and r.method_name == "ensemble" and r.results.get("ensemble")]


def _groups(rows: Sequence[Record]) -> dict[EnsembleKey, list[Record]]:
    groups: dict[EnsembleKey, list[Record]] = defaultdict(list)
    for r in rows:
        groups[EnsembleKey(r.data, r.backbone, r.norm, r.eps_key)].append(r)
    return groups


def _sorted_groups(rows: Sequence[Record]) -> list[tuple[EnsembleKey, list[Record]]]:
    """The ensemble groups, L-inf before the other norms."""
    return sorted(_groups(rows).items(), key=lambda item: item[0].sort_key())


def _model_order(rows: Sequence[Record]) -> list[Record]:
    rank = layout_ranks(rows)
    return sorted(rows, key=lambda r: (defense_sort_key(r.defense), rank.get(r.layout_name, 0)))


def members_vs_ensemble(records: Sequence[Record]) -> list[Table]:
    """Per (data, backbone, eps): each member's measure beside the ensemble's joint worst case and the gap."""
    tables = []
    for key, rows in _sorted_groups(_ensemble_rows(records)):
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
                name=slug("ensemble", key.data, key.backbone, *key.slug_parts(eps)),
                title=f"Members vs ensemble · {key.data} · {key.backbone} · {key.budget(eps)}",
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
    for key, rows in _sorted_groups(_ensemble_rows(records)):
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
                name=slug("worst_task", key.data, key.backbone, *key.slug_parts(eps)),
                title=f"Per-task worst case · {key.data} · {key.backbone} · {key.budget(eps)}",
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
    for key, group in _sorted_groups(rows):
        data, backbone, budget = key.data, key.backbone, key.budget(group[0].eps)
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
                    f"{data}/{backbone} {budget} {r.layout_name} ({r.defense}): strongest single member "
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
                f"{data}/{backbone} {budget} defense {defense}: most robust layout under the ensemble: "
                f"{ens_best}; "
                + (
                    f"members that rank another layout first: {', '.join(differing)}"
                    if differing
                    else "every single member agrees"
                )
            )
    return notes


def member_config(record: Record, member: str) -> dict:
    """The config an ensemble row's member was built from (a per-task copy `name:task` shares its entry)."""
    members = record.config.get("members") or {}
    found = members.get(member) or members.get(member.rpartition(":")[0]) or {}
    return dict(found) if isinstance(found, dict) else {}


def adaptive_options(config: dict) -> dict[str, object]:
    """The adaptive options a config sets (absent, null, false, 0 and empty values are not options)."""
    return {k: config[k] for k in ADAPTIVE_OPTIONS if config.get(k) not in (None, False, 0, "", [], {})}


def is_gradient_free(record: Record, member: str) -> bool:
    return member_config(record, member).get("method") in GRADIENT_FREE_METHODS


def member_label(record: Record, member: str) -> str:
    """A member's name with what matters on a masked model: gradient-free, and its adaptive options."""
    options = adaptive_options(member_config(record, member))
    tags = (["gradient-free"] if is_gradient_free(record, member) else []) + [
        f"{k}={v}" for k, v in options.items()
    ]
    return f"{member} [{', '.join(tags)}]" if tags else member


def flagged_worst_case(records: Sequence[Record]) -> tuple[list[Table], list[str]]:
    """Per flagged model with ensemble rows: per rule, which members won its per-image worst case (images
    won, gradient-free or not, adaptive options); a note for each, a warning where no member is
    gradient-free."""
    rows = [r for r in _ensemble_rows(records) if model_flags(r)]
    tables, notes = [], []
    for key, group in _sorted_groups(rows):
        eps = group[0].eps
        body = []
        for r in _model_order(group):
            ens = r.results["ensemble"]
            free = [m for m in ens["members"] if is_gradient_free(r, m)]
            cell_options = adaptive_options(dict(r.config))
            primary = ens.get("primary", "joint")
            for rule in sorted(ens["wins"], key=lambda x: (x != primary, task_sort_key(x.partition(":")[2]))):
                wins = ens["wins"][rule]
                total = sum(wins.values())
                won = sorted((-n, m) for m, n in wins.items() if n)
                by_free = sum(n for m, n in wins.items() if m in free)
                body.append(
                    [
                        marked_layout(r),
                        r.defense,
                        rule,
                        "; ".join(f"{member_label(r, m)} {-n}/{total}" for n, m in won),
                        f"{by_free}/{total}" if free else "no gradient-free member",
                        ", ".join(f"{k}={v}" for k, v in cell_options.items()),
                    ]
                )
            where = f"{r.layout_name} ({r.defense}, {r.data}, {key.budget(eps)})"
            if not free:
                notes.append(
                    f"WARNING: flagged model {where} was attacked by an ensemble without a gradient-free "
                    "member: every member relies on gradients the diagnostics distrust; evaluate it with "
                    "attack=ensemble or ensemble_quick (their Square member needs no gradient)"
                )
            else:
                joint = ens["wins"].get(primary, {})
                notes.append(
                    f"flagged model {where}: gradient-free members ({', '.join(free)}) found the joint worst "
                    f"case on {sum(joint.get(m, 0) for m in free)} of {sum(joint.values())} images"
                )
        tables.append(
            Table(
                name=slug("flagged_worst_case", key.data, key.backbone, *key.slug_parts(eps)),
                title=f"Who found the worst case of flagged models · {key.data} · {key.backbone} · "
                f"{key.budget(eps)}",
                columns=["layout", "defense", "rule", "won by (images)", "gradient-free", "cell options"],
                rows=body,
                description=(
                    "Models whose diagnostics tripped a flag: per selection rule, the members whose x_adv "
                    "was the per-image worst case and on how many images, members that use no gradient "
                    "(e.g. Square) marked gradient-free, and adaptive options "
                    f"({', '.join(ADAPTIVE_OPTIONS)}) of a member or of the whole cell where the row records "
                    "them. A flagged model's number should come from an ensemble with a gradient-free member."
                ),
            )
        )
    return tables, notes


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
                "robustness; its number should come from an ensemble with a gradient-free member "
                "(attack=ensemble or ensemble_quick)"
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
    flagged, flagged_notes = flagged_worst_case(records)
    tables = members_vs_ensemble(records) + per_task_worst_case(records) + flagged
    diag, notes = diagnostics_table(records)
    notes += [n for n in flagged_notes if n.startswith("WARNING")]
    if not tables and diag is None:
        return None, []
    part = ["## Reliable evaluation: single attacks vs the ensemble", ""]
    findings = ranking_notes(records) + [n for n in flagged_notes if not n.startswith("WARNING")]
    if findings:
        part += [f"- {n}" for n in findings] + [""]
    part += [render(t) for t in tables]
    if diag is not None:
        part.append(render(diag))
    return "\n".join(part), notes
