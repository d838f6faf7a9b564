"""Report entry point: results store(s) -> tables (markdown + CSV), PNG figures and a summary.md.

    python -m mtl_robust.report --store results.jsonl [--store other.jsonl ...] --out report/ \
        [--method pgd] [--eps 8/255] [--study transfer]

`--method`/`--eps` pick the attack the trade-off scatter uses and narrow the per-model figures (heatmaps,
eps curves, examples); tables always hold every cell. Several stores are compared side by side (a `store`
column in every table).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtl_robust.evaluation.cost_report import cost_section
from mtl_robust.evaluation.records import Record, format_eps, load_records, parse_eps, store_labels
from mtl_robust.evaluation.reliability import reliability_section
from mtl_robust.evaluation.report import (
    Table,
    clean_tables,
    eps_curves,
    example_refs,
    failed_table,
    relative_tables,
    tradeoff_sets,
    transfer_sets,
)
from mtl_robust.evaluation.uncertainty import uncertainty_sections


@dataclass
class Summary:
    """summary.md assembled section by section; `outputs` lists every file written, in order."""

    out: Path
    sections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.out)).as_posix()

    def table(self, table: Table, folder: Path) -> str:
        md, csv = table.write(folder)
        self.outputs += [md, csv]
        text = f"### {table.title}\n\n"
        if table.description:
            text += table.description + "\n\n"
        return text + table.to_markdown() + f"\n\n[markdown]({self.rel(md)}) · [CSV]({self.rel(csv)})\n"

    def image(self, path: Path, alt: str) -> str:
        self.outputs.append(path)
        return f"![{alt}]({self.rel(path)})\n"


def _anchor(title: str) -> str:
    """The heading anchor GitHub-style markdown renderers generate."""
    return "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def _unique(notes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(notes))


def write_report(
    records: Sequence[Record],
    out: str | os.PathLike,
    stores: Sequence[str | os.PathLike] = (),
    method: str | None = None,
    eps: float | None = None,
    max_examples: int = 12,
    example_images: int = 3,
) -> list[Path]:
    """Write every table, figure and summary.md under `out`; returns the files written (summary last)."""
    from mtl_robust.evaluation import plots  # matplotlib only when a report is actually drawn

    out = Path(out)
    tables_dir, plots_dir = out / "tables", out / "plots"
    out.mkdir(parents=True, exist_ok=True)
    s = Summary(out)

    ok = [r for r in records if r.ok]
    header = ["# Robustness report", ""]
    for path, label in zip(stores, store_labels(stores)):
        mine = [r for r in records if r.store == label]
        studies = sorted({r.study for r in mine})
        header.append(
            f"- store `{path}` (label `{label}`): {len(mine)} cells, {sum(r.ok for r in mine)} ok, "
            f"{sum(not r.ok for r in mine)} failed; studies: {', '.join(studies) or '-'}"
        )
    header.append(
        f"- selection for the trade-off scatter and per-model figures: method "
        f"{method or 'pgd if present (all methods for per-model figures)'}, "
        f"ε {format_eps(eps) if eps is not None else 'largest with DGBA rows (all ε for heatmaps)'}"
    )
    header.append("- all relative changes are in percent; negative = worse than clean")
    if method is not None and not any(r.method == method for r in ok):
        s.notes.append(f"no successful rows use method {method!r}; the per-model figures are empty")

    # Failed cells first: a report that hides failures invites wrong conclusions.
    failed = failed_table(records)
    part = ["## Failed cells", ""]
    part.append(s.table(failed, tables_dir) if failed.rows else "No failed cells.\n")
    s.sections.append("\n".join(part))

    rel, notes = relative_tables(records)
    s.notes += notes
    part = ["## Relative change under attack", ""]
    part += [s.table(t, tables_dir) for t in rel] or ["No successful attack rows.\n"]
    s.sections.append("\n".join(part))
    s.sections += uncertainty_sections(records, s, tables_dir, plots_dir)

    reliability, notes = reliability_section(records, lambda t: s.table(t, tables_dir))
    s.notes += notes
    if reliability is not None:
        s.sections.append(reliability)

    clean, notes = clean_tables(records)
    s.notes += notes
    part = ["## Clean metrics per layout", ""]
    part += [s.table(t, tables_dir) for t in clean] or ["No rows with clean metrics.\n"]
    s.sections.append("\n".join(part))

    tradeoffs, notes = tradeoff_sets(records, method, eps)
    s.notes += notes
    part = ["## Sharing vs robustness", ""]
    for ts in tradeoffs:
        png = plots.plot_tradeoff(ts, plots_dir / f"{ts.name}.png")
        part += [s.image(png, ts.table().title), s.table(ts.table(), tables_dir)]
    if not tradeoffs:
        part.append(
            "Not drawn: it needs DGBA rows and an independent layout (sharing score 0) with clean metrics "
            "for the same data, "
            "backbone and defense (see the notes).\n"
        )
    s.sections.append("\n".join(part))

    cost = cost_section(records, s, tables_dir, plots_dir, method, eps)  # studies of training defenses
    if cost:
        s.sections.append(cost)

    transfers, notes = transfer_sets(records, method, eps)
    s.notes += notes
    limits: dict[tuple, float] = defaultdict(float)
    for t in transfers:  # one colour scale per (model family, attack) so layouts can be compared by eye
        values = [abs(v) for row in t.matrix.values() for v in row.values() if math.isfinite(v)]
        group = (t.source, t.data, t.backbone, t.defense, t.method, t.eps)
        limits[group] = max([limits[group]] + values)
    part = [
        "## Transfer of SINGLE attacks",
        "",
        "Rows: attacked task; columns: evaluated task; colour scale shared by the layouts of one attack.",
        "",
    ]
    for t in transfers:
        png = plots.plot_transfer_heatmap(
            t, plots_dir / f"{t.name}.png", limits[(t.source, t.data, t.backbone, t.defense, t.method, t.eps)]
        )
        md, csv = t.table().write(tables_dir)
        s.outputs += [md, csv]
        part.append(s.image(png, t.table().title) + f"\n[CSV]({s.rel(csv)})\n")
    if not transfers:
        part.append("No SINGLE rows.\n")
    s.sections.append("\n".join(part))

    curves, notes = eps_curves(records, method)
    s.notes += notes
    part = ["## Relative change vs ε", ""]
    for c in curves:
        png = plots.plot_eps_curves(c, plots_dir / f"{c.name}.png")
        part.append(s.image(png, f"{c.method} {c.layout_name} {c.defense}"))
    if not curves:
        part.append("No attack rows.\n")
    s.sections.append("\n".join(part))

    refs, notes = example_refs(records, method, eps)
    s.notes += notes
    part = ["## Examples", ""]
    if len(refs) > max_examples:
        s.notes.append(
            f"{len(refs)} cells saved examples; the first {max_examples} are drawn (--max-examples)"
        )
    for ref in refs[:max_examples]:
        try:
            png = plots.plot_example_grid(ref, plots_dir / f"{ref.name}.png", max_images=example_images)
        except (OSError, ValueError, KeyError, IndexError, RuntimeError) as exc:
            # One unreadable example file must not cost the rest of the report.
            s.notes.append(f"example of cell {ref.record.key} ({ref.path}) could not be drawn: {exc!r}")
            continue
        part.append(s.image(png, ref.title))
    if not refs:
        part.append("No cell saved an example batch.\n")
    s.sections.append("\n".join(part))

    notes_part = (
        ["## Notes", ""] + [f"- {n}" for n in _unique(s.notes)] if s.notes else ["## Notes", "", "None."]
    )
    sections = ["\n".join(notes_part)] + s.sections
    titles = [section.splitlines()[0].removeprefix("## ") for section in sections]
    contents = ["## Contents", ""] + [f"- [{t}](#{_anchor(t)})" for t in titles]
    summary = out / "summary.md"
    summary.write_text(
        "\n".join(header) + "\n\n" + "\n\n".join(["\n".join(contents)] + sections) + "\n", encoding="utf-8"
    )
    s.outputs.append(summary)
    return s.outputs


def _eps_arg(text: str) -> float:
    try:
        return parse_eps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtl_robust.report",
        description="Tables, figures and a summary.md from one or more results stores (JSONL).",
    )
    parser.add_argument(
        "--store",
        action="append",
        required=True,
        metavar="PATH",
        help="results store (.jsonl); repeat to compare several studies",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--method",
        default=None,
        help="attack method for the trade-off scatter and per-model figures (default: pgd if present)",
    )
    parser.add_argument(
        "--eps",
        type=_eps_arg,
        default=None,
        help="eps as '8/255' or a float in [0, 1] (default: the largest with DGBA rows)",
    )
    parser.add_argument(
        "--study",
        action="append",
        default=None,
        metavar="NAME",
        help="keep only rows of this config.study (repeatable)",
    )
    parser.add_argument("--max-examples", type=int, default=12, help="at most this many example grids")
    parser.add_argument("--example-images", type=int, default=3, help="images (rows) per example grid")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        records = load_records(args.store, args.study)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not records:
        print(
            f"warning: no rows in {', '.join(args.store)}"
            + (f" for study {', '.join(args.study)}" if args.study else ""),
            file=sys.stderr,
        )
    outputs = write_report(
        records, args.out, args.store, args.method, args.eps, args.max_examples, args.example_images
    )
    for path in outputs:
        print(f"wrote {path}")
    print(f"summary: {outputs[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
