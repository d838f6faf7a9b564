"""The damage-vs-collateral table: targets' relative change against the other tasks', per aimed direction."""

from __future__ import annotations

import math
from pathlib import Path

from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.report import load_records, write_report
from mtl_robust.report.collateral import aimed_tasks, collateral_tables
from tests.test_report import TASKS, config, results


def _store(path: Path) -> Path:
    store = ResultsStore(path)
    changes = {
        "dgba": {t: -0.3 for t in TASKS},  # over all tasks: no collateral, not in the table
        "dgba@seg+depth": {"seg": -0.4, "normal": -0.1, "depth": -0.2},
        "stealth@depth": {"seg": -0.01, "normal": 0.01, "depth": -0.5},
        "single:normal": {"seg": -0.05, "normal": -0.6, "depth": -0.05},
    }
    for direction, rel in changes.items():
        cfg = config("all_shared", direction, 8)
        store.append(config_key(cfg), cfg, results("all_shared", rel))
    return path


def test_aimed_tasks_of_sets_stealth_and_single() -> None:
    assert aimed_tasks("dgba@depth+seg") == ("seg", "depth")
    assert aimed_tasks("stealth:0.1@depth") == ("depth",)
    assert aimed_tasks("single:seg") == ("seg",)
    assert aimed_tasks("dgba") is None and aimed_tasks("not a direction:@") is None


def test_the_table_holds_each_aimed_direction_with_its_damage_and_collateral(tmp_path: Path) -> None:
    assert TASKS == ["seg", "normal", "depth"]
    tables, _ = collateral_tables(load_records([_store(tmp_path / "results.jsonl")]))
    (table,) = tables
    rows = {row[table.columns.index("direction")]: row for row in table.rows}
    assert set(rows) == {"SINGLE(normal)", "DGBA on {seg, depth}", "STEALTH on {depth}"}
    value = {
        d: (r[table.columns.index("targets (%)")], r[table.columns.index("others (%)")])
        for d, r in rows.items()
    }
    assert math.isclose(value["DGBA on {seg, depth}"][0], -30) and math.isclose(
        value["DGBA on {seg, depth}"][1], -10
    )
    assert math.isclose(value["STEALTH on {depth}"][0], -50) and math.isclose(
        value["STEALTH on {depth}"][1], 0, abs_tol=1e-9
    )
    assert math.isclose(value["SINGLE(normal)"][0], -60) and math.isclose(value["SINGLE(normal)"][1], -5)
    order = [row[table.columns.index("direction")] for row in table.rows]
    assert order == ["SINGLE(normal)", "DGBA on {seg, depth}", "STEALTH on {depth}"]


def test_the_report_has_the_section(tmp_path: Path) -> None:
    store = _store(tmp_path / "results.jsonl")
    write_report(load_records([store]), tmp_path / "report", [store])
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Damage vs collateral" in summary and "DGBA on {seg, depth}" in summary
