"""Transfer matrices: how a per-task attack (SINGLE) on task i changes every task j (the paper's RQ1).

`transfer_matrix` and `format_matrix` are the plain matrix (the pipeline prints it after a sweep);
`transfer_sets` builds one matrix per model, method and eps from report records.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from mtl_robust.evaluation.relative import RelativeChange
from mtl_robust.report.directions import SINGLE, spec_of
from mtl_robust.report.flags import mark
from mtl_robust.report.order import family_attack_order, layout_ranks, ordered_tasks, task_sort_key
from mtl_robust.report.records import Record, Sources, attack_eps, attack_eps_slug
from mtl_robust.report.seeds import position_row
from mtl_robust.report.tables import Table, slug
from mtl_robust.values.budget import same_eps
from mtl_robust.values.direction import DirectionSpec


def transfer_matrix(single_results: Mapping[str, RelativeChange]) -> dict[str, dict[str, float]]:
    """`matrix[attacked][evaluated]` = relative change of the evaluated task under SINGLE(attacked)."""
    return {attacked: dict(change.per_task) for attacked, change in single_results.items()}


def format_matrix(matrix: Mapping[str, Mapping[str, float]], percent: bool = True) -> str:
    if not matrix:
        return "(empty transfer matrix)"
    evaluated = list(next(iter(matrix.values())))
    scale = 100.0 if percent else 1.0
    lines = ["attacked \\ evaluated " + " ".join(f"{t:>10}" for t in evaluated)]
    for attacked, row in matrix.items():
        lines.append(f"{attacked:<21}" + " ".join(f"{scale * row[t]:>10.2f}" for t in evaluated))
    return "\n".join(lines)


@dataclass
class TransferSet:
    """Transfer matrix (%) of the per-task attacks on one model: matrix[attacked][evaluated]."""

    source: str
    data: str
    backbone: str
    defense: str
    method: str
    eps: float
    layout_name: str
    matrix: dict[str, dict[str, float]]
    direction: str = SINGLE  # the per-task direction's name

    @property
    def name(self) -> str:
        return slug(
            "transfer",
            self.source,
            self.data,
            self.backbone,
            self.defense,
            self.method,
            attack_eps_slug(self.eps, self.method),
            self.layout_name,
            "" if self.direction == SINGLE else self.direction,
        )

    @property
    def scale_group(self) -> tuple:
        """The matrices that share one colour scale: the layouts of one model family under one attack."""
        return (self.source, self.data, self.backbone, self.defense, self.method, self.eps, self.direction)

    def attack_label(self, task: str) -> str:
        """The row label of the attack on `task`: "SINGLE(seg)"."""
        return DirectionSpec(self.direction, task).label

    def table(self) -> Table:
        evaluated = sorted({t for row in self.matrix.values() for t in row}, key=task_sort_key)
        return Table(
            name=self.name,
            title=(
                f"Transfer matrix · {self.layout_name} · {self.method.upper()} "
                f"ε={attack_eps(self.eps, self.method)} · "
                f"defense {self.defense} · {self.data}/{self.backbone}"
            ),
            columns=["attacked \\ evaluated"] + [f"{t} (%)" for t in evaluated],
            rows=[
                [self.attack_label(a)] + [self.matrix[a].get(t, math.nan) for t in evaluated]
                for a in self.matrix
            ],
        )


class TransferKey(NamedTuple):
    """One matrix: a model under one per-task direction, method and eps."""

    source: str
    data: str
    backbone: str
    defense: str
    method: str
    eps_key: float
    layout: str
    direction: str


def transfer_sets(
    records: Sequence[Record], method: str | None = None, eps: float | None = None
) -> tuple[list[TransferSet], list[str]]:
    """One transfer matrix per (model, method, eps) with per-task rows; `method`/`eps` narrow the choice."""
    notes: list[str] = []
    sources = Sources.of(records)
    groups: dict[TransferKey, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        spec = spec_of(r.direction)
        if not (r.ok and spec is not None and spec.per_task and math.isfinite(r.eps)):
            continue
        if (method is not None and r.method != method) or (eps is not None and not same_eps(r.eps, eps)):
            continue
        key = TransferKey(
            sources.label(r), r.data, r.backbone, r.defense, r.method, r.eps_key, r.layout_name, spec.name
        )
        groups[key][spec.task].append(r)
    rank = layout_ranks(records)
    out = []
    for key in sorted(
        groups,
        key=lambda k: (
            k.source,
            *family_attack_order(k.data, k.backbone, k.defense, k.method),
            k.eps_key,
            rank[k.layout],
            k.direction,
        ),
    ):
        by_task = groups[key]
        rows_in = [r for rs in by_task.values() for r in rs]
        tasks = ordered_tasks(rows_in)
        changes = {}
        parts = (key.source, key.data, key.backbone, key.defense, key.method, key.eps_key, key.layout)
        where = " · ".join(str(part) for part in parts if part)
        for attacked in sorted(by_task, key=task_sort_key):
            r = position_row(by_task[attacked], f"transfer {where} / {attacked}", notes)
            changes[attacked] = RelativeChange(
                per_task={t: r.rel_task(t) / 100 for t in tasks}, average=r.rel_avg / 100
            )
        matrix = {a: {t: 100 * v for t, v in row.items()} for a, row in transfer_matrix(changes).items()}
        out.append(
            TransferSet(
                source=key.source,
                data=key.data,
                backbone=key.backbone,
                defense=key.defense,
                method=key.method,
                eps=rows_in[0].eps,
                layout_name=mark(key.layout, r),  # ⚠ where the model is flagged
                matrix=matrix,
                direction=key.direction,
            )
        )
    return out, notes
