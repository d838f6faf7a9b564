"""Report data: the latest row of every results-store cell, shaped into the paper's tables and plot inputs.

Works on one or several stores (docs/results_schema.md); every number is a percent (relative changes x 100).
Real stores are messy: values may be null or NaN (markdown shows "n/a", CSV an empty cell), cells may have
failed, a cell may have been written several times (the latest row wins, via `ResultsStore.latest()`), and
two cells of different configs may land on the same table position (the latest wins and a note says which
config fields differed). Notes are returned next to the results so the summary can show them.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtl_robust.evaluation.baseline import independent_baseline
from mtl_robust.evaluation.flags import marked_layout
from mtl_robust.evaluation.records import (
    Cell,
    Record,
    Sources,
    defense_sort_key,
    direction_label,
    direction_sort_key,
    eps_slug,
    format_eps,
    format_number,
    latest_of,
    layout_order,
    method_sort_key,
    num,
    ordered_tasks,
    same_eps,
    slug,
    task_sort_key,
)
from mtl_robust.evaluation.relative import RelativeChange, compare
from mtl_robust.evaluation.transfer import transfer_matrix


# ------------------------------------------------------------------------------------------------ tables
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


def relative_tables(records: Sequence[Record]) -> tuple[list[Table], list[str]]:
    """One table per (data, backbone, defense, method, eps): rows (layout, direction), columns rel_task %."""
    notes: list[str] = []
    sources = Sources.of(records)
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.is_attack:
            groups[(r.data, r.backbone, r.defense, r.method, round(r.eps * 255, 4))].append(r)
    ordered = sorted(
        groups,
        key=lambda g: (g[0], g[1], defense_sort_key(g[2]), method_sort_key(g[3]), g[4]),
    )
    tables = []
    for gkey in ordered:
        data, backbone, defense, method, _ = gkey
        rows_in = groups[gkey]
        eps = rows_in[0].eps
        tasks = ordered_tasks(rows_in)
        columns = (
            sources.columns + ["layout", "sharing", "direction"] + [f"{t} (%)" for t in tasks] + ["avg (%)"]
        )
        title = f"{data} · {backbone} · defense {defense} · {method.upper()} ε={format_eps(eps)}"
        cells: dict[tuple, list[Record]] = defaultdict(list)
        for r in rows_in:
            cells[(tuple(sources.values(r)), r.layout_name, r.direction)].append(r)
        layout_rank = {name: i for i, (name, _s) in enumerate(layout_order(rows_in))}
        rows = []
        for cell in sorted(
            cells,
            key=lambda c: (c[0], layout_rank[c[1]], direction_sort_key(c[2], tasks)),
        ):
            r = latest_of(cells[cell], f"{title}, {cell[1]} / {cell[2]}", notes)
            score = r.sharing_score
            rows.append(
                list(cell[0])
                + [
                    marked_layout(r),
                    int(score) if math.isfinite(score) else None,
                    direction_label(r.direction),
                ]
                + [r.rel_task(t) for t in tasks]
                + [r.rel_avg]
            )
        tables.append(
            Table(
                name=slug("rel", data, backbone, defense, method, eps_slug(eps)),
                title=title,
                columns=columns,
                rows=rows,
                description=(
                    "Relative change of each task's metrics under attack, in percent (negative = worse; "
                    "mean over the task's metrics); `avg` is the mean over tasks (the paper's measure)."
                ),
            )
        )
    return tables, notes


ModelKey = tuple[str, str, str, str, str, str]  # store, study, data, backbone, defense, layout_name


def clean_rows(records: Sequence[Record], notes: list[str] | None = None) -> dict[ModelKey, Record]:
    """The row whose clean metrics stand for each model; clean-only rows (method 'none') are preferred."""
    notes = [] if notes is None else notes
    candidates: dict[ModelKey, list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.clean_metrics():
            candidates[(r.store, r.study, r.data, r.backbone, r.defense, r.layout_name)].append(r)
    chosen = {}
    for key, rows in candidates.items():
        clean_only = [r for r in rows if not r.is_attack]
        pool = clean_only or rows
        best = max(pool, key=lambda r: num(r.time) if math.isfinite(num(r.time)) else -math.inf)
        models = {r.text("model_id") for r in rows}
        if len(models) > 1:
            notes.append(
                f"layout {key[5]} ({key[2]}, {key[3]}, defense {key[4]}) has rows of {len(models)} different "
                f"checkpoints ({', '.join(sorted(models))}); clean metrics of "
                f"{best.text('model_id')} are used"
            )
        chosen[key] = best
    return chosen


def _clean_change(base: Record, value: Record) -> RelativeChange:
    """compare() with base = the independent model's clean metrics; tasks or metrics missing on either side
    are left out (their change would be meaningless) rather than failing the whole report."""
    hib_raw = value.results.get("higher_is_better") or base.results.get("higher_is_better") or {}
    base_clean, value_clean = base.clean_metrics(), value.clean_metrics()
    hib = {
        t: {m: bool(h) for m, h in ms.items() if m in base_clean.get(t, {}) and m in value_clean.get(t, {})}
        for t, ms in hib_raw.items()
        if t in base_clean and t in value_clean
    }
    hib = {t: ms for t, ms in hib.items() if ms}
    return compare(base_clean, value_clean, hib)


def clean_gains(
    records: Sequence[Record], notes: list[str] | None = None
) -> dict[ModelKey, RelativeChange | None]:
    """Clean accuracy gain of every model over the independent model of the same data, backbone, defense.

    The independent model is looked up in the same store and study first, then in any store given. None
    where no independent model exists.
    """
    notes = [] if notes is None else notes
    chosen = clean_rows(records, notes)
    gains: dict[ModelKey, RelativeChange | None] = {}
    missing: set[tuple[str, str, str]] = set()
    for key, row in chosen.items():
        store, study, data, backbone, defense, _ = key
        base = independent_baseline(chosen, key)  # sharing score 0, whatever the layout is called
        if base is not None:
            if (base.store, base.study) != (store, study):
                notes.append(
                    f"clean gain of {key[5]} ({store or '-'}/{study}): independent model taken from "
                    f"{base.store or '-'}/{base.study}"
                )
        if base is None:
            missing.add((data, backbone, defense))
            gains[key] = None
            continue
        gains[key] = _clean_change(base, row)
    for data, backbone, defense in sorted(missing):
        notes.append(
            f"no independent layout (sharing score 0) with clean metrics for {data} / {backbone} / "
            f"defense {defense}: "
            "clean gains (and the trade-off plot) are not available there"
        )
    return gains


def clean_tables(records: Sequence[Record]) -> tuple[list[Table], list[str]]:
    """Clean metrics per layout for each (data, backbone, defense), plus the clean gain over independent."""
    notes: list[str] = []
    sources = Sources.of(records)
    chosen = clean_rows(records, notes)
    gains = clean_gains(records, [])  # its notes also come from clean_rows: they are in `notes` already
    groups: dict[tuple[str, str, str], list[ModelKey]] = defaultdict(list)
    for key in chosen:
        groups[key[2:5]].append(key)
    tables = []
    for data, backbone, defense in sorted(groups, key=lambda g: (g[0], g[1], defense_sort_key(g[2]))):
        keys = groups[(data, backbone, defense)]
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
        rank = {name: i for i, (name, _s) in enumerate(layout_order(rows_in))}
        rows = []
        for key in sorted(keys, key=lambda k: (tuple(sources.values(chosen[k])), rank[k[5]])):
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
                name=slug("clean", data, backbone, defense),
                title=f"Clean metrics · {data} · {backbone} · defense {defense}",
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


def failed_table(records: Sequence[Record], max_error_chars: int = 300) -> Table:
    """Every cell whose latest row failed, with enough of its config to find and rerun it."""
    sources = Sources.of(records)
    failed = sorted((r for r in records if not r.ok), key=lambda r: (r.store, num(r.time)))
    rows = []
    for r in failed:
        summary = (
            f"{r.data}/{r.backbone} · layout {r.layout_name} · defense {r.defense} · {r.method} "
            f"{r.direction} ε={format_eps(r.eps)}"
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


# -------------------------------------------------------------------------------------------- plot inputs
@dataclass
class EpsCurves:
    """Relative change (%) against eps for every direction of one model and method."""

    source: str
    data: str
    backbone: str
    defense: str
    method: str
    layout_name: str
    tasks: list[str]
    # direction -> [(eps, {task: %}, avg %)] sorted by eps
    series: dict[str, list[tuple[float, dict[str, float], float]]]

    @property
    def name(self) -> str:
        return slug("eps", self.source, self.data, self.backbone, self.defense, self.method, self.layout_name)


def eps_curves(records: Sequence[Record], method: str | None = None) -> tuple[list[EpsCurves], list[str]]:
    notes: list[str] = []
    sources = Sources.of(records)
    groups: dict[tuple, dict[tuple[str, float], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.ok and r.is_attack and (method is None or r.method == method) and math.isfinite(r.eps):
            gkey = (sources.label(r), r.data, r.backbone, r.defense, r.method, r.layout_name)
            groups[gkey][(r.direction, round(r.eps * 255, 4))].append(r)
    rank = {name: i for i, (name, _s) in enumerate(layout_order(records))}
    out = []
    for gkey in sorted(
        groups, key=lambda g: (g[0], g[1], g[2], defense_sort_key(g[3]), method_sort_key(g[4]), rank[g[5]])
    ):
        cells = groups[gkey]
        rows_in = [r for rs in cells.values() for r in rs]
        tasks = ordered_tasks(rows_in)
        series: dict[str, list] = defaultdict(list)
        for (direction, _), rs in cells.items():
            r = latest_of(rs, f"ε curves {' · '.join(g for g in gkey if g)} / {direction}", notes)
            series[direction].append((r.eps, {t: r.rel_task(t) for t in tasks}, r.rel_avg))
        ordered = {
            d: sorted(series[d], key=lambda p: p[0])
            for d in sorted(series, key=lambda d: direction_sort_key(d, tasks))
        }
        out.append(EpsCurves(*gkey, tasks=tasks, series=ordered))
    return out, notes


@dataclass
class TransferSet:
    """Transfer matrix (%) of the SINGLE attacks on one model: matrix[attacked][evaluated]."""

    source: str
    data: str
    backbone: str
    defense: str
    method: str
    eps: float
    layout_name: str
    matrix: dict[str, dict[str, float]]

    @property
    def name(self) -> str:
        return slug(
            "transfer",
            self.source,
            self.data,
            self.backbone,
            self.defense,
            self.method,
            eps_slug(self.eps),
            self.layout_name,
        )

    def table(self) -> Table:
        evaluated = sorted({t for row in self.matrix.values() for t in row}, key=task_sort_key)
        return Table(
            name=self.name,
            title=(
                f"Transfer matrix · {self.layout_name} · {self.method.upper()} ε={format_eps(self.eps)} · "
                f"defense {self.defense} · {self.data}/{self.backbone}"
            ),
            columns=["attacked \\ evaluated"] + [f"{t} (%)" for t in evaluated],
            rows=[
                [direction_label(f"single:{a}")] + [self.matrix[a].get(t, math.nan) for t in evaluated]
                for a in self.matrix
            ],
        )


def transfer_sets(
    records: Sequence[Record], method: str | None = None, eps: float | None = None
) -> tuple[list[TransferSet], list[str]]:
    """One transfer matrix per (model, method, eps) that has SINGLE rows; `method`/`eps` narrow the choice."""
    notes: list[str] = []
    sources = Sources.of(records)
    groups: dict[tuple, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if not (r.ok and r.direction.startswith("single:") and math.isfinite(r.eps)):
            continue
        if (method is not None and r.method != method) or (eps is not None and not same_eps(r.eps, eps)):
            continue
        gkey = (
            sources.label(r),
            r.data,
            r.backbone,
            r.defense,
            r.method,
            round(r.eps * 255, 4),
            r.layout_name,
        )
        groups[gkey][r.direction.split(":", 1)[1]].append(r)
    rank = {name: i for i, (name, _s) in enumerate(layout_order(records))}
    out = []
    for gkey in sorted(
        groups,
        key=lambda g: (g[0], g[1], g[2], defense_sort_key(g[3]), method_sort_key(g[4]), g[5], rank[g[6]]),
    ):
        by_task = groups[gkey]
        rows_in = [r for rs in by_task.values() for r in rs]
        tasks = ordered_tasks(rows_in)
        changes = {}
        for attacked in sorted(by_task, key=task_sort_key):
            r = latest_of(
                by_task[attacked], f"transfer {' · '.join(str(g) for g in gkey if g)} / {attacked}", notes
            )
            changes[attacked] = RelativeChange(
                per_task={t: r.rel_task(t) / 100 for t in tasks}, average=r.rel_avg / 100
            )
        matrix = {a: {t: 100 * v for t, v in row.items()} for a, row in transfer_matrix(changes).items()}
        source, data, backbone, defense, meth, _, layout = gkey
        out.append(TransferSet(source, data, backbone, defense, meth, rows_in[0].eps, layout, matrix))
    return out, notes


@dataclass
class TradeoffPoint:
    source: str
    defense: str
    layout_name: str
    sharing_score: float
    clean_gain: float  # % over the independent model (mean over tasks)
    dgba_change: float  # rel_avg under DGBA, %


@dataclass
class TradeoffSet:
    """Sharing-vs-robustness points of one (data, backbone) at one method and eps."""

    data: str
    backbone: str
    method: str
    eps: float
    points: list[TradeoffPoint]

    @property
    def name(self) -> str:
        return slug("tradeoff", self.data, self.backbone, self.method, eps_slug(self.eps))

    def table(self) -> Table:
        show_source = any(p.source for p in self.points)
        return Table(
            name=self.name,
            title=(
                f"Sharing vs robustness · {self.data} · {self.backbone} · DGBA {self.method.upper()} "
                f"ε={format_eps(self.eps)}"
            ),
            columns=(["source"] if show_source else [])
            + ["defense", "layout", "sharing", "clean gain (%)", "DGBA avg (%)"],
            rows=[
                ([p.source] if show_source else [])
                + [
                    p.defense,
                    p.layout_name,
                    int(p.sharing_score) if math.isfinite(p.sharing_score) else None,
                    p.clean_gain,
                    p.dgba_change,
                ]
                for p in self.points
            ],
            description=(
                "x = clean accuracy gain over the independent layout (sharing score 0; same data, backbone, "
                "defense; mean over tasks); y = relative change under DGBA (mean over tasks); "
                "both in percent."
            ),
        )


def tradeoff_sets(
    records: Sequence[Record], method: str | None = None, eps: float | None = None
) -> tuple[list[TradeoffSet], list[str]]:
    """Points for the sharing-vs-robustness scatter of each (data, backbone).

    Method defaults to pgd when it has DGBA rows (else the first method that has); eps defaults to the
    largest eps with DGBA rows for that method.
    """
    notes: list[str] = []
    sources = Sources.of(records)
    gains = clean_gains(records, notes)
    dgba: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.direction == "dgba" and math.isfinite(r.eps):
            dgba[(r.data, r.backbone)].append(r)
    out = []
    for data, backbone in sorted(dgba):
        rows = dgba[(data, backbone)]
        methods = sorted({r.method for r in rows}, key=method_sort_key)
        chosen_method = method or ("pgd" if "pgd" in methods else methods[0])
        with_method = [r for r in rows if r.method == chosen_method]
        if not with_method:
            notes.append(f"trade-off {data}/{backbone}: no DGBA rows with method {chosen_method}; skipped")
            continue
        chosen_eps = eps if eps is not None else max(r.eps for r in with_method)
        selected = [r for r in with_method if same_eps(r.eps, chosen_eps)]
        if not selected:
            notes.append(
                f"trade-off {data}/{backbone}: no DGBA {chosen_method} rows at "
                f"ε={format_eps(chosen_eps)}; skipped"
            )
            continue
        cells: dict[ModelKey, list[Record]] = defaultdict(list)
        for r in selected:
            cells[(r.store, r.study, r.data, r.backbone, r.defense, r.layout_name)].append(r)
        points = []
        for key, rs in cells.items():
            r = latest_of(rs, f"trade-off {data}/{backbone} {key[5]} defense {key[4]}", notes)
            gain = gains.get(key)
            if gain is None:
                continue  # clean_gains() already noted the missing independent model
            points.append(
                TradeoffPoint(
                    sources.label(r), r.defense, r.layout_name, r.sharing_score, 100 * gain.average, r.rel_avg
                )
            )
        if not points:
            notes.append(
                f"trade-off {data}/{backbone}: no layout has both a DGBA row and a clean gain over "
                "the independent layout; scatter skipped"
            )
            continue
        points.sort(
            key=lambda p: (p.source, defense_sort_key(p.defense), -num(p.sharing_score), p.layout_name)
        )
        out.append(TradeoffSet(data, backbone, chosen_method, chosen_eps, points))
    return out, notes


@dataclass
class ExampleRef:
    record: Record
    path: Path
    title: str
    source: str = ""

    @property
    def name(self) -> str:
        r = self.record
        return slug(
            "example",
            self.source,
            r.data,
            r.backbone,
            r.defense,
            r.layout_name,
            r.method,
            r.direction,
            eps_slug(r.eps),
            r.key[:8],
        )


def example_refs(
    records: Sequence[Record], method: str | None = None, eps: float | None = None
) -> tuple[list[ExampleRef], list[str]]:
    """Rows that saved an example batch (the example file is looked for next to the store too)."""
    notes: list[str] = []
    sources = Sources.of(records)
    refs = []
    for r in records:
        example = r.results.get("example") if r.ok else None
        if not example:
            continue
        if (method is not None and r.method != method) or (eps is not None and not same_eps(r.eps, eps)):
            continue
        given = Path(str(example))
        # the path as written, then as if relative to the store, then the store's examples/ folder (a
        # report folder that was moved or copied together with its store)
        candidates = [
            given,
            r.base_dir / given,
            r.base_dir / "examples" / given.name,
            r.base_dir / given.name,
        ]
        path = next((c for c in candidates if c.is_file()), given)
        if not path.is_file():
            notes.append(f"example file {example!r} of cell {r.key} not found")
            continue
        prefix = sources.label(r)
        title = (
            f"{prefix + ' · ' if prefix else ''}{r.layout_name} · {r.method.upper()} "
            f"{direction_label(r.direction)} ε={format_eps(r.eps)} · defense {r.defense}"
        )
        refs.append(ExampleRef(r, path, title, prefix))
    refs.sort(
        key=lambda e: (
            e.record.store,
            defense_sort_key(e.record.defense),
            e.record.layout_name,
            method_sort_key(e.record.method),
            direction_sort_key(e.record.direction),
            e.record.eps,
        )
    )
    return refs, notes
