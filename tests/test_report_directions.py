"""The report package: importable without torch, and directions named, ordered and coloured by the
direction registry (a direction nobody registered, and one registered at runtime)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.colors import same_color

import mtl_robust.values.direction as direction_registry
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.report import load_records, write_report
from mtl_robust.report.curves import eps_curves
from mtl_robust.report.directions import OTHER_COLORS, direction_style
from mtl_robust.report.flags import FLAG_MARK
from mtl_robust.report.tables import relative_tables
from mtl_robust.values.direction import DirectionStyle, register_style
from tests.test_report import TASKS, config, results


def test_report_package_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "import mtl_robust.report, mtl_robust.report.records, mtl_robust.report.tables\n"
        "import mtl_robust.report.figures, mtl_robust.report.seeds, mtl_robust.report.uncertainty\n"
        "import mtl_robust.report.cost\n"
        "import mtl_robust.report.reliability, mtl_robust.jobs.report\n"
        "assert 'torch' not in sys.modules, 'the report imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def toy_store(path: Path, budgets: tuple[int, ...] = (8,)) -> Path:
    """Two layouts (one independent) attacked by DGBA, an ablation, and two unregistered directions (at two
    budgets for the eps curves: one budget draws no curve)."""
    store = ResultsStore(path)
    for layout in ("all_shared", "independent"):
        for direction, change in (("dgba", -0.3), ("minmax", -0.25), ("toy", -0.2), ("abc", -0.1)):
            for pixels in budgets:
                cfg = config(layout, direction, pixels)
                store.append(config_key(cfg), cfg, results(layout, dict.fromkeys(TASKS, change * pixels / 8)))
    return path


def directions_column(path: Path) -> list[str]:
    (table,), _ = relative_tables(load_records([path]))
    return [row[table.columns.index("direction")] for row in table.rows if row[0] == "all_shared"]


def line_colours(path: Path) -> dict[str, str]:
    """Legend label -> line colour of the eps-curves figure of the all_shared layout."""
    from mtl_robust.report.figures import draw_eps_curves

    curves, _ = eps_curves(load_records([path]))
    # a flagged model (e.g. an undertrained smoke model) carries ⚠ after its layout name
    (shared,) = [c for c in curves if c.layout_name.removesuffix(f" {FLAG_MARK}") == "all_shared"]
    fig = draw_eps_curves(shared)
    try:
        lines = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
        return {line.get_label(): line.get_color() for line in lines}
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_unregistered_direction_reports_under_its_name_after_registered_ones(tmp_path: Path) -> None:
    store = toy_store(tmp_path / "toy.jsonl")
    # not alphabetical: "abc" sorts after the registered ablation "minmax"
    assert directions_column(store) == ["DGBA", "minmax", "abc", "toy"]
    colours = line_colours(toy_store(tmp_path / "curves.jsonl", (4, 8)))
    assert same_color(colours["DGBA"], "tab:red")
    assert colours["toy"] in OTHER_COLORS and colours["abc"] in OTHER_COLORS
    assert colours["toy"] != colours["abc"]


def test_direction_registered_at_runtime_shows_its_label_and_colour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direction_registry, "_STYLES", dict(direction_registry._STYLES))  # undone after
    register_style("toy", DirectionStyle("TOY", "tab:green", 3))
    store = toy_store(tmp_path / "toy.jsonl")
    assert directions_column(store) == ["DGBA", "minmax", "TOY", "abc"]
    assert same_color(line_colours(toy_store(tmp_path / "curves.jsonl", (4, 8)))["TOY"], "tab:green")
    assert same_color(direction_style("toy")["color"], "tab:green")

    out = tmp_path / "report"
    write_report(load_records([store]), out, [store])
    # the trade-off is drawn under the new direction too; DGBA's files keep their names
    tables = {p.name for p in (out / "tables").glob("tradeoff_*.md")}
    assert "tradeoff_synthetic_small_resnet_pgd_eps8.md" in tables
    toy_table = (out / "tables" / "tradeoff_synthetic_small_resnet_pgd_eps8_toy.md").read_text()
    assert "· TOY PGD ε=8/255" in toy_table and "TOY avg (%)" in toy_table
    assert (out / "plots" / "tradeoff_synthetic_small_resnet_pgd_eps8_toy.png").is_file()
