"""Transfer between models: x_adv crafted on a surrogate model, evaluated on a target (`attack.surrogate`).

Rows that carry `surrogate_id` are the cells: per data set, backbone, method, direction and eps they form
one surrogate x target matrix of the target's relative change (rel_avg, %), each cell with its 95 % CI
from the per-image statistics (over seeds too where there are several; `report/seeds.py`). The diagonal
(surrogate = target's training config) is the white-box attack, and the white-box tables show it too; the
rest are transfer rows, shown only here. A model flagged by the report (undertrained
or by the diagnostics) is marked ⚠ as a surrogate and as a target; the section states numbers and
intervals only, no verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from mtl_robust.report.flags import FLAG_MARK, model_flags
from mtl_robust.report.order import defense_sort_key, layout_ranks, method_sort_key
from mtl_robust.report.records import Record, attack_eps, attack_eps_slug
from mtl_robust.report.seeds import Analysis
from mtl_robust.report.tables import Table, slug


def names_a_surrogate(record: Record) -> bool:
    """A cell of a surrogate x target matrix, its diagonal included."""
    return bool(record.config.get("surrogate_id"))


SURROGATE_FIELDS = ("surrogate_id", "surrogate_layout", "surrogate_defense")


def as_white_box(record: Record) -> Record:
    """A row as the white-box tables see it: a diagonal cell without its surrogate fields, so that it pairs
    with the white-box rows of other models (AT vs clean, DGBA vs TOTAL)."""
    if not names_a_surrogate(record):
        return record
    config = {k: v for k, v in record.config.items() if k not in SURROGATE_FIELDS}
    return replace(record, config=config)


def is_transfer(record: Record) -> bool:
    """x_adv crafted on another model than the one evaluated. The diagonal (surrogate = the target's own
    checkpoint) is the white-box attack and belongs in the white-box tables as well."""
    return names_a_surrogate(record) and record.config.get("surrogate_id") != record.config.get("model_id")


class MatrixKey(NamedTuple):
    data: str
    backbone: str
    method: str
    direction: str
    eps: float


class ModelLabel(NamedTuple):
    layout: str
    defense: str
    other: bool = False  # a surrogate of the target's layout and defense that is another model (seed)

    def text(self, flagged: bool) -> str:
        other = " (another model)" if self.other else ""
        return f"{self.layout} / {self.defense}{other}" + (f" {FLAG_MARK}" if flagged else "")


CRAFTED_ON = "crafted_on"  # "itself" (white-box) or "another model": keeps the two kinds of rows apart


def with_crafted_on(record: Record) -> Record:
    """The row with `crafted_on` in its config, so that a white-box diagonal row and a transfer row from
    another model of the same layout and defense (another seed) never share a group or a cell."""
    kind = "another model" if is_transfer(record) else "itself"
    return replace(record, config={**record.config, CRAFTED_ON: kind})


@dataclass
class CellEstimate:
    mean: float  # rel_avg, percent
    low: float
    high: float


@dataclass
class TransferModels:
    """One surrogate x target matrix; `cells[(surrogate, target)]`."""

    key: MatrixKey
    surrogates: list[ModelLabel]
    targets: list[ModelLabel]
    cells: dict[tuple[ModelLabel, ModelLabel], CellEstimate]
    flagged: set[ModelLabel] = field(default_factory=set)

    @property
    def name(self) -> str:
        k = self.key
        return slug(
            "transfer_models", k.data, k.backbone, k.method, k.direction, attack_eps_slug(k.eps, k.method)
        )

    @property
    def title(self) -> str:
        k = self.key
        return (
            f"Transfer between models: {k.method.upper()}-{k.direction.upper()} "
            f"at ε {attack_eps(k.eps, k.method)} "
            f"({k.data}, {k.backbone}): rel avg (%) of the target, 95 % CI"
        )

    def table(self) -> Table:
        columns = ["surrogate \\ target"] + [t.text(t in self.flagged) for t in self.targets]
        rows: list[list] = []
        for s in self.surrogates:
            row: list = [s.text(s in self.flagged)]
            for t in self.targets:
                cell = self.cells.get((s, t))
                row.append("n/a" if cell is None else f"{cell.mean:.2f} {interval(cell)}")
            rows.append(row)
        return Table(
            self.name,
            self.title,
            columns,
            rows,
            description=(
                "Rows: the model x_adv is crafted on; columns: the model it is evaluated on; the diagonal is "
                f"the white-box attack. {FLAG_MARK}: flagged model (undertrained or gradient masking), its "
                "numbers may mislead."
            ),
        )


def interval(cell: CellEstimate) -> str:
    if not (math.isfinite(cell.low) and math.isfinite(cell.high)):
        return "[n/a]"
    return f"[{cell.low:.2f}, {cell.high:.2f}]"


def transfer_model_sets(records: Sequence[Record]) -> tuple[list[TransferModels], list[str]]:
    """The matrices of every successful transfer row, with CIs; notes say what could not be estimated."""
    transfer = [with_crafted_on(r) for r in records if r.ok and names_a_surrogate(r)]
    if not transfer:
        return [], []
    analysis = Analysis.of(transfer)
    # A model is flagged when any of its rows is (as a target, or in a white-box cell of the same store).
    flagged_ids = {r.text("model_id") for r in records if r.ok and model_flags(r)}
    sets: dict[MatrixKey, TransferModels] = {}
    for group, est in zip(analysis.groups, analysis.estimates):
        r = group.first
        key = MatrixKey(r.text("data"), r.text("backbone"), r.method, r.direction, r.eps)
        target = ModelLabel(r.layout_name, r.defense)
        surrogate = ModelLabel(r.text("surrogate_layout"), r.text("surrogate_defense"))
        if is_transfer(r) and surrogate == target:  # another seed's model: its own row, not the diagonal
            surrogate = surrogate._replace(other=True)
        matrix = sets.setdefault(key, TransferModels(key, [], [], {}))
        for label, collection in ((target, matrix.targets), (surrogate, matrix.surrogates)):
            if label not in collection:
                collection.append(label)
        matrix.cells[(surrogate, target)] = CellEstimate(100 * est.mean, 100 * est.low, 100 * est.high)
        if r.text("model_id") in flagged_ids:
            matrix.flagged.add(target)
        if r.text("surrogate_id") in flagged_ids:
            matrix.flagged.add(surrogate)
    ranks = layout_ranks(records)

    def order(label: ModelLabel) -> tuple:
        return (
            defense_sort_key(label.defense),
            ranks.get(label.layout, len(ranks)),
            label.layout,
            label.other,
        )

    for matrix in sets.values():
        matrix.surrogates.sort(key=order)
        matrix.targets.sort(key=order)
    ordered = sorted(
        sets.values(),
        key=lambda m: (m.key.data, m.key.backbone, method_sort_key(m.key.method), m.key.direction, m.key.eps),
    )
    return ordered, list(analysis.notes)


def plot_transfer_models(matrix: TransferModels, path: Path) -> Path:
    """Heatmap: surrogate rows x target columns, colour = rel avg (%), each cell with its CI."""
    import matplotlib.pyplot as plt
    import numpy as np

    from mtl_robust.report import figures  # matplotlib only when a report is drawn

    values = np.array(
        [
            [matrix.cells[(s, t)].mean if (s, t) in matrix.cells else np.nan for t in matrix.targets]
            for s in matrix.surrogates
        ]
    )
    limit = figures.colour_limit(values)  # symmetric and floored: near-zero cells stay near white
    fig, ax = plt.subplots(figsize=(1.9 * len(matrix.targets) + 2.5, 0.9 * len(matrix.surrogates) + 1.8))
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit)
    for i, s in enumerate(matrix.surrogates):
        for j, t in enumerate(matrix.targets):
            cell = matrix.cells.get((s, t))
            if cell is not None:
                ax.text(j, i, f"{cell.mean:.1f}\n{interval(cell)}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(matrix.targets)), [t.text(t in matrix.flagged) for t in matrix.targets])
    ax.set_yticks(range(len(matrix.surrogates)), [s.text(s in matrix.flagged) for s in matrix.surrogates])
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    ax.set_xlabel("target (evaluated)")
    ax.set_ylabel("surrogate (crafted on)")
    k = matrix.key
    ax.set_title(
        f"{k.method.upper()}-{k.direction.upper()} ε {attack_eps(k.eps, k.method)}: transfer rel avg (%)",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, label="rel avg (%)")
    fig.tight_layout()
    return figures._save(fig, path)


def transfer_models_section(
    records: Sequence[Record],
    table: Callable[[Table], str],
    image: Callable[[Path, str], str],
    plots_dir: Path,
) -> tuple[str | None, list[str]]:
    """The report section (None when the records hold no transfer rows) and its notes."""
    matrices, notes = transfer_model_sets(records)
    if not matrices:
        return None, notes
    part = [
        "## Transfer between models",
        "",
        "x_adv crafted on the surrogate (rows), evaluated on the target (columns); the diagonal is the "
        "white-box attack. Cells: rel avg (%) and its 95 % CI over images (and seeds where several).",
        "",
    ]
    for matrix in matrices:
        png = plot_transfer_models(matrix, plots_dir / f"{matrix.name}.png")
        part += [image(png, matrix.table().title), table(matrix.table())]
    return "\n".join(part), notes
