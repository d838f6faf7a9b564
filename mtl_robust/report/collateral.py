"""Damage vs collateral: per direction aimed at some tasks, the targets' relative change against the others'.

A row is one (layout, direction) cell of a model family under one attack whose direction has targets: a
target set (`dgba@seg+depth`, docs/attacker_goals.md), STEALTH's targets, or SINGLE's task. `targets (%)` is
the mean relative change over the target tasks, `others (%)` over every other task (the transfer, or for
STEALTH what it holds); both are means over seeds, with their standard deviations when there are several.
A direction over all tasks has no collateral and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mtl_robust.report.directions import direction_label, direction_sort_key, spec_of
from mtl_robust.report.flags import marked_layout
from mtl_robust.report.order import layout_ranks, ordered_tasks
from mtl_robust.report.records import Record, Sources
from mtl_robust.report.seeds import seeds_of_position
from mtl_robust.report.tables import Table, attack_groups, finite_mean, finite_std, row_cells, slug
from mtl_robust.values.budget import eps_slug


def aimed_tasks(direction: str) -> tuple[str, ...] | None:
    """The tasks a direction aims at (its target set, or SINGLE's task); None: all tasks or unreadable."""
    spec = spec_of(direction)
    if spec is None:
        return None
    if spec.targets is not None:
        return spec.targets
    return (spec.task,) if spec.task is not None else None


def collateral_tables(records: Sequence[Record]) -> tuple[list[Table], list[str]]:
    """One table per (data, backbone, defense, method, eps) that has aimed directions."""
    notes: list[str] = []
    sources = Sources.of(records)
    tables = []
    aimed_rows = [r for r in records if aimed_tasks(r.direction) is not None]
    for attack, rows_in in attack_groups(aimed_rows):
        tasks = ordered_tasks(rows_in)
        title = (
            f"Damage vs collateral · {attack.data} · {attack.backbone} · defense {attack.defense} · "
            f"{attack.method.upper()} ε={rows_in[0].eps_text}"
        )
        cells = row_cells(rows_in, sources)
        rank = layout_ranks(rows_in)
        rows = []
        for cell in sorted(
            cells, key=lambda c: (c.sources, rank[c.layout], direction_sort_key(c.direction, tasks))
        ):
            seeds = seeds_of_position(cells[cell], f"{title}, {cell.layout} / {cell.direction}", notes)
            aimed = aimed_tasks(cell.direction) or ()
            others = [t for t in tasks if t not in aimed]
            damage = [finite_mean([s.rel_task(t) for t in aimed]) for s in seeds]
            collateral = [finite_mean([s.rel_task(t) for t in others]) if others else math.nan for s in seeds]
            rows.append(
                list(cell.sources)
                + [marked_layout(seeds[0]), direction_label(cell.direction), "+".join(aimed), len(aimed)]
                + [
                    finite_mean(damage),
                    finite_std(damage),
                    finite_mean(collateral),
                    finite_std(collateral),
                    len(seeds),
                ]
            )
        columns = ["layout", "direction", "targets", "n targets", "targets (%)", "targets std (%)"]
        columns += ["others (%)", "others std (%)", "seeds"]
        if all(row[-1] < 2 for row in rows):  # one seed everywhere: no spread to show, no column of n/a
            keep = [i for i, c in enumerate(sources.columns + columns) if not c.endswith("std (%)")]
            rows = [[row[i] for i in keep] for row in rows]
            columns = [c for c in columns if not c.endswith("std (%)")]
        tables.append(
            Table(
                name=slug(
                    "collateral",
                    attack.data,
                    attack.backbone,
                    attack.defense,
                    attack.method,
                    eps_slug(rows_in[0].eps, rows_in[0].norm),
                ),
                title=title,
                columns=sources.columns + columns,
                rows=rows,
                description=(
                    "Directions aimed at some tasks: the mean relative change (%) of the target tasks and of "
                    "every other task (negative = worse), means over seeds with their standard deviation "
                    "(shown with two or more seeds)."
                ),
            )
        )
    return tables, notes
