"""Report tables: the `Table` type (markdown + CSV) and the tables built straight from records: relative
change under attack, clean metrics per layout, failed cells.

Works on one or several stores (docs/results_schema.md); every number is a percent (relative changes x 100).
Values may be null or NaN (markdown shows "n/a", CSV an empty cell), and two cells of different configs
may land on the same table position (the latest wins and a note says which config fields differed). Notes
are returned next to the tables so the summary can show them.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mtl_robust.report.directions import direction_label, direction_sort_key
from mtl_robust.report.flags import marked_layout
from mtl_robust.report.models import ModelFamily, ModelKey, clean_gains, clean_rows
from mtl_robust.report.order import family_attack_order, layout_ranks, ordered_tasks
from mtl_robust.report.records import Record, Sources, num
from mtl_robust.report.seeds import mean_over_seeds, seeds_of_position
from mtl_robust.values.budget import eps_slug

Cell = str | int | float | None  # a table cell: None and NaN are "missing"


def format_number(value: float, spec: str = ".2f") -> str:
    """`format()` without the "-0.00" that rounding a tiny negative value gives."""
    text = format(value, spec)
    if text.startswith("-") and not any(c in "123456789" for c in text.split("e")[0]):
        text = text[1:]
    return text


def slug(*parts: str) -> str:
    """A file name from its parts: `slug("rel", "nyuv2", "pgd")` -> "rel_nyuv2_pgd"."""
    text = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "table"


@dataclass
class Table:
    """A titled table that renders as markdown and CSV; `formats` maps a column to its float format."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    formats: dict[str, str] = field(default_factory=dict)
    default_format: str = ".2f"
    description: str = ""

    def column(self, name: str) -> list[Cell]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def _md_cell(self, column: str, value: Cell) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return (
                "n/a"
                if math.isnan(value)
                else format_number(value, self.formats.get(column, self.default_format))
            )
        return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    def to_markdown(self) -> str:
        numeric = [
            all(isinstance(row[i], int | float) or row[i] is None for row in self.rows) and bool(self.rows)
            for i in range(len(self.columns))
        ]
        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(self._md_cell(c, v) for c, v in zip(self.columns, row)) + " |")
        return "\n".join(lines)

    def write(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """`<name>.md` (title, description, table) and `<name>.csv` (full precision, empty = missing)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / f"{self.name}.md"
        text = f"### {self.title}\n\n"
        if self.description:
            text += self.description + "\n\n"
        md.write_text(text + self.to_markdown() + "\n", encoding="utf-8")
        path_csv = folder / f"{self.name}.csv"
        with path_csv.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.columns)
            for row in self.rows:
                writer.writerow([_csv_cell(v) for v in row])
        return md, path_csv


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(round(value, 6))
    return str(value)


# ------------------------------------------------------------------------------- relative change under attack
class AttackKey(NamedTuple):
    """One relative-change table: a model family under one attack."""

    data: str
    backbone: str
    defense: str
    method: str
    eps_key: float

    def sort_key(self) -> tuple:
        return (*family_attack_order(self.data, self.backbone, self.defense, self.method), self.eps_key)


class RowKey(NamedTuple):
    """One row of a relative-change table."""

    sources: tuple[str, ...]
    layout: str
    direction: str


def attack_groups(records: Sequence[Record]) -> list[tuple[AttackKey, list[Record]]]:
    """The successful attack rows grouped by model family and attack, in report order."""
    groups: dict[AttackKey, list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.is_attack:
            groups[AttackKey(r.data, r.backbone, r.defense, r.method, r.eps_key)].append(r)
    return [(attack, groups[attack]) for attack in sorted(groups, key=AttackKey.sort_key)]


def row_cells(records: Sequence[Record], sources: Sources) -> dict[RowKey, list[Record]]:
    """The rows of one table by position (sources, layout, direction); a position's seeds together."""
    cells: dict[RowKey, list[Record]] = defaultdict(list)
    for r in records:
        cells[RowKey(tuple(sources.values(r)), r.layout_name, r.direction)].append(r)
    return cells


def relative_tables(records: Sequence[Record]) -> tuple[list[Table], list[str]]:
    """One table per (data, backbone, defense, method, eps): rows (layout, direction), columns rel_task %."""
    notes: list[str] = []
    sources = Sources.of(records)
    tables = []
    for attack, rows_in in attack_groups(records):
        eps = rows_in[0].eps
        tasks = ordered_tasks(rows_in)
        columns = (
            sources.columns + ["layout", "sharing", "direction"] + [f"{t} (%)" for t in tasks] + ["avg (%)"]
        )
        title = (
            f"{attack.data} · {attack.backbone} · defense {attack.defense} · {attack.method.upper()} "
            f"ε={rows_in[0].eps_text}"
        )
        cells = row_cells(rows_in, sources)
        layout_rank = layout_ranks(rows_in)
        shown = {
            cell: seeds_of_position(rs, f"{title}, {cell.layout} / {cell.direction}", notes)
            for cell, rs in cells.items()
        }
        several = any(len(seeds) > 1 for seeds in shown.values())
        if several:
            columns = columns + ["seeds", "avg std (%)"]
        rows = []
        for cell in sorted(
            cells,
            key=lambda c: (c.sources, layout_rank[c.layout], direction_sort_key(c.direction, tasks)),
        ):
            seeds = shown[cell]
            r = mean_over_seeds(seeds)  # the flag mark: any seed's model flagged
            score = r.sharing_score
            averages = [r.rel_avg for r in seeds]
            rows.append(
                list(cell.sources)
                + [
                    marked_layout(r),
                    int(score) if math.isfinite(score) else None,
                    direction_label(r.direction),
                ]
                + [finite_mean([s.rel_task(t) for s in seeds]) for t in tasks]
                + [finite_mean(averages)]
                + ([len(seeds), finite_std(averages)] if several else [])
            )
        tables.append(
            Table(
                name=slug(
                    "rel",
                    attack.data,
                    attack.backbone,
                    attack.defense,
                    attack.method,
                    eps_slug(eps, rows_in[0].norm),
                ),
                title=title,
                columns=columns,
                rows=rows,
                description=(
                    "Relative change of each task's metrics under attack, in percent (negative = worse; "
                    "mean over the task's metrics); `avg` is the mean over tasks (the paper's measure). "
                    "With several seeds of a cell: the mean over seeds, `avg std` their standard deviation."
                ),
            )
        )
    return tables, notes


def _time(record: Record) -> float:
    return num(record.time) if math.isfinite(num(record.time)) else -math.inf


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values (NaN: missing); NaN when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def finite_std(values: Sequence[float]) -> float:
    """The sample standard deviation of the finite values; NaN below two."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return math.nan
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


# ------------------------------------------------------------------------------------------- clean metrics
def clean_tables(records: Sequence[Record]) -> tuple[list[Table], list[str]]:
    """Clean metrics per layout for each (data, backbone, defense), plus the clean gain over independent."""
    notes: list[str] = []
    sources = Sources.of(records)
    chosen = clean_rows(records, notes)
    gains = clean_gains(records, [])  # its notes also come from clean_rows: they are in `notes` already
    groups: dict[ModelFamily, list[ModelKey]] = defaultdict(list)
    for key in chosen:
        groups[key.family].append(key)
    tables = []
    for family in sorted(groups, key=ModelFamily.sort_key):
        keys = groups[family]
        rows_in = [chosen[k] for k in keys]
        tasks = ordered_tasks(rows_in)
        metric_cols: list[tuple[str, str]] = []
        for t in tasks:
            for r in rows_in:
                for m in r.clean_metrics().get(t, {}):
                    if (t, m) not in metric_cols:
                        metric_cols.append((t, m))
        gain_cols = [f"gain {t} (%)" for t in tasks] + ["gain avg (%)"]
        columns = (
            sources.columns
            + ["layout", "sharing", "model_id", "structure"]
            + [f"{t}/{m}" for t, m in metric_cols]
            + gain_cols
        )
        rank = layout_ranks(rows_in)
        rows = []
        for key in sorted(keys, key=lambda k: (tuple(sources.values(chosen[k])), rank[k.layout])):
            r = chosen[key]
            clean = r.clean_metrics()
            gain = gains.get(key)
            score = r.sharing_score
            rows.append(
                sources.values(r)
                + [
                    marked_layout(r),
                    int(score) if math.isfinite(score) else None,
                    r.text("model_id", ""),
                    r.text("layout", ""),
                ]
                + [clean.get(t, {}).get(m, math.nan) for t, m in metric_cols]
                + [100 * gain.per_task.get(t, math.nan) if gain else math.nan for t in tasks]
                + [100 * gain.average if gain else math.nan]
            )
        tables.append(
            Table(
                name=slug("clean", family.data, family.backbone, family.defense),
                title=f"Clean metrics · {family.data} · {family.backbone} · defense {family.defense}",
                columns=columns,
                rows=rows,
                formats={f"{t}/{m}": ".4g" for t, m in metric_cols},
                description=(
                    "Clean metrics of each layout; `gain` = relative change of the clean metrics over the "
                    "independent layout (sharing score 0), in percent (positive = sharing helped)."
                ),
            )
        )
    return tables, notes


# -------------------------------------------------------------------------------------------- failed cells
def failed_table(records: Sequence[Record], max_error_chars: int = 300) -> Table:
    """Every cell whose latest row failed, with enough of its config to find and rerun it."""
    sources = Sources.of(records)
    failed = sorted((r for r in records if not r.ok), key=lambda r: (r.store, num(r.time)))
    rows = []
    for r in failed:
        summary = (
            f"{r.data}/{r.backbone} · layout {r.layout_name} · defense {r.defense} · {r.method} "
            f"{r.direction} ε={r.eps_text}"
        )
        if isinstance(r.config.get("overrides"), list) and "method" not in r.config:
            # a whole job failed before it wrote cells: its overrides are what identifies it
            summary = "job " + (" ".join(map(str, r.config["overrides"])) or "(no overrides)")
        error = " ".join(r.error.split()) or f"(status {r.status!r}, no error message)"
        if len(error) > max_error_chars:
            error = error[: max_error_chars - 1] + "…"
        rows.append(sources.values(r) + [r.key, summary, error])
    return Table(
        name="failed",
        title="Failed cells",
        columns=sources.columns + ["key", "config", "error"],
        rows=rows,
        description="Cells whose latest row has status `failed` (rerunning the sweep retries them).",
    )
