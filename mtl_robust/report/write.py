"""`write_report`: records -> every table (markdown + CSV), figure (PNG) and summary.md under one folder.

Sections in summary.md: notes, failed cells, relative change under attack, seeds and paired comparisons,
reliable evaluation, transfer between models (rows crafted on a surrogate, shown only there), clean
metrics, sharing vs robustness, training cost, transfer matrices, relative change vs eps, example grids.
Failed cells come first: a report that hides failures invites wrong conclusions.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mtl_robust.report.collateral import collateral_tables
from mtl_robust.report.cost import cost_section
from mtl_robust.report.curves import eps_curves
from mtl_robust.report.examples import example_refs
from mtl_robust.report.mtl_methods import mtl_methods_sections
from mtl_robust.report.records import Record, attack_eps, store_labels
from mtl_robust.report.reliability import reliability_section
from mtl_robust.report.summary import Summary
from mtl_robust.report.tables import clean_tables, failed_table, relative_tables
from mtl_robust.report.tradeoff import tradeoff_sets
from mtl_robust.report.transfer import transfer_sets
from mtl_robust.report.transfer_models import as_white_box, is_transfer, transfer_models_section
from mtl_robust.report.uncertainty import DEFAULT_MIN_SEEDS, uncertainty_sections


def write_report(
    records: Sequence[Record],
    out: str | os.PathLike,
    stores: Sequence[str | os.PathLike] = (),
    method: str | None = None,
    eps: float | None = None,
    max_examples: int = 12,
    example_images: int = 3,
    min_seeds: int = DEFAULT_MIN_SEEDS,
    include_flagged: bool = False,
) -> list[Path]:
    """Write every table, figure and summary.md under `out`; returns the files written (summary last).

    `method`/`eps` pick the attack the trade-off scatter uses and narrow the per-model figures (heatmaps,
    eps curves, examples); tables always hold every cell. Comparisons of training procedures get a verdict
    only with at least `min_seeds` seeds; models flagged undertrained get none unless `include_flagged`.
    """
    if min_seeds < 1:
        raise ValueError(f"min_seeds must be at least 1, got {min_seeds}")
    from mtl_robust.report import figures  # matplotlib only when a report is actually drawn

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
        + (
            f"ε {attack_eps(eps, method or '')}"
            if eps is not None
            else "ε largest with DGBA rows (all ε for heatmaps)"
        )
    )
    header.append("- all relative changes are in percent; negative = worse than clean")
    if method is not None and not any(r.method == method for r in ok):
        s.notes.append(f"no successful rows use method {method!r}; the per-model figures are empty")

    failed = failed_table(records)
    part = ["## Failed cells", ""]
    part.append(s.table(failed, tables_dir) if failed.rows else "No failed cells.\n")
    s.sections.append("\n".join(part))
    # Transfer rows (crafted on another model) have their own section; the white-box sections leave them
    # out. A matrix's diagonal is a white-box cell and is in both.
    with_surrogates = records
    records = [as_white_box(r) for r in records if not is_transfer(r)]

    rel, notes = relative_tables(records)
    s.notes += notes
    part = ["## Relative change under attack", ""]
    part += [s.table(t, tables_dir) for t in rel] or ["No successful attack rows.\n"]
    s.sections.append("\n".join(part))
    aimed, notes = collateral_tables(records)  # directions aimed at some tasks (docs/attacker_goals.md)
    s.notes += notes
    if aimed:
        s.sections.append(
            "\n".join(["## Damage vs collateral", ""] + [s.table(t, tables_dir) for t in aimed])
        )
    found: list = []  # the paired comparisons, quoted by the cost section
    s.sections += uncertainty_sections(records, s, tables_dir, plots_dir, min_seeds, include_flagged, found)

    reliability, notes = reliability_section(records, lambda t: s.table(t, tables_dir))
    s.notes += notes
    if reliability is not None:
        s.sections.append(reliability)
    s.sections += mtl_methods_sections(records, s, tables_dir, min_seeds, include_flagged)

    transfer_models, notes = transfer_models_section(
        with_surrogates, lambda t: s.table(t, tables_dir), s.image, plots_dir
    )
    s.notes += notes
    if transfer_models is not None:
        s.sections.append(transfer_models)

    clean, notes = clean_tables(records)
    s.notes += notes
    part = ["## Clean metrics per layout", ""]
    part += [s.table(t, tables_dir) for t in clean] or ["No rows with clean metrics.\n"]
    s.sections.append("\n".join(part))

    tradeoffs, notes = tradeoff_sets(records, method, eps)
    s.notes += notes
    part = ["## Sharing vs robustness", ""]
    for ts in tradeoffs:
        png = figures.plot_tradeoff(ts, plots_dir / f"{ts.name}.png")
        part += [s.image(png, ts.table().title), s.table(ts.table(), tables_dir)]
    if not tradeoffs:
        part.append(
            "Not drawn: it needs DGBA rows and an independent layout (sharing score 0) with clean metrics "
            "for the same data, "
            "backbone and defense (see the notes).\n"
        )
    s.sections.append("\n".join(part))

    cost = cost_section(records, s, tables_dir, plots_dir, method, eps, found)  # studies of training defenses
    if cost:
        s.sections.append(cost)

    transfers, notes = transfer_sets(records, method, eps)
    s.notes += notes
    limits: dict[tuple, float] = defaultdict(float)
    for t in transfers:  # one colour scale per (model family, attack) so layouts can be compared by eye
        values = [abs(v) for row in t.matrix.values() for v in row.values() if math.isfinite(v)]
        limits[t.scale_group] = max([limits[t.scale_group]] + values)
    part = [
        "## Transfer of SINGLE attacks",
        "",
        "Rows: attacked task; columns: evaluated task; colour scale shared by the layouts of one attack.",
        "",
    ]
    for t in transfers:
        png = figures.plot_transfer_heatmap(t, plots_dir / f"{t.name}.png", limits[t.scale_group])
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
        png = figures.plot_eps_curves(c, plots_dir / f"{c.name}.png")
        part.append(s.image(png, f"{c.method} {c.layout_name} {c.defense}"))
    if not curves:
        part.append("No ε curves (a curve needs attacks at two or more ε).\n")
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
            png = figures.plot_example_grid(ref, plots_dir / f"{ref.name}.png", max_images=example_images)
        except (OSError, ValueError, KeyError, IndexError, RuntimeError) as exc:
            # One unreadable example file must not cost the rest of the report.
            s.notes.append(f"example of cell {ref.record.key} ({ref.path}) could not be drawn: {exc!r}")
            continue
        part.append(s.image(png, ref.title))
    if not refs:
        part.append("No cell saved an example batch.\n")
    s.sections.append("\n".join(part))

    s.write(header)
    return s.outputs
