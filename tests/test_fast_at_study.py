"""The fast adversarial training study's smoke command, end to end: rows, costs and the report section."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.report.flags import FLAG_MARK
from tests.conftest import run_entry_point

DEFENSES = {
    "none",
    "adv_train:pgd-total",
    "adv_train:pgd-dgba",
    *(f"{m}:{d}" for m in ("fgsm_rs", "n_fgsm", "free_at") for d in ("total", "dgba")),
}


@pytest.mark.slow
def test_study_fast_at_smoke(tmp_path: Path) -> None:
    proc = run_entry_point("mtl_robust.pipeline", ["experiment=study_fast_at_smoke"], tmp_path, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(ResultsStore(tmp_path / "logs" / "results" / "fast_at_smoke.jsonl").latest().values())
    assert rows and all(r["status"] == "ok" for r in rows)
    cells = {(r["config"]["layout_name"], r["config"]["defense"], r["config"]["direction"]) for r in rows}
    assert cells == {
        (layout, defense, direction)
        for layout in ("all_shared", "independent")
        for defense in DEFENSES
        for direction in ("total", "dgba")
    }
    assert all(r["config"]["training"]["co_watch"]["checks"] >= 1 for r in rows)

    report = tmp_path / "logs" / "reports" / "fast_at_smoke"
    assert "## Training cost vs robustness" in (report / "summary.md").read_text()
    tables = sorted((report / "tables").glob("cost_*.csv"))
    assert len(tables) == 2 and len(list((report / "plots").glob("cost_*.png"))) == 2
    for table in tables:
        # a model flagged by the diagnostics or as undertrained carries the mark in its defense cell
        by_defense = {
            row["defense"].removesuffix(f" {FLAG_MARK}"): row for row in csv.DictReader(table.open())
        }
        assert set(by_defense) == DEFENSES
        per_iteration = {d: float(row["passes/iter ×clean"]) for d, row in by_defense.items()}
        # counted passes: PGD-AT 1 clean + 10 attack + 1 adversarial forward+backward; FGSM-RS/N-FGSM 2;
        # Free AT 4 replays (one shared backward each with TOTAL; one more input-only backward with DGBA)
        assert per_iteration["adv_train:pgd-total"] == pytest.approx(12)
        assert per_iteration["fgsm_rs:dgba"] == per_iteration["n_fgsm:total"] == pytest.approx(2)
        assert per_iteration["free_at:total"] == pytest.approx(4)
        assert per_iteration["free_at:dgba"] == pytest.approx(6)
        # Free AT runs a quarter of the epochs: as many passes over the run as clean training
        assert float(by_defense["free_at:total"]["run passes ×clean"]) == pytest.approx(1)
