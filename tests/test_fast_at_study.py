"""The fast adversarial training study's smoke command, end to end: rows, costs, the ensemble and the
like-for-like comparison with PGD-AT in the report's cost section."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.report.cost import ENSEMBLE_COLUMN, VS_PGD_AT_COLUMN
from mtl_robust.report.flags import FLAG_MARK
from tests.conftest import run_entry_point

FAST = {f"{m}:{d}" for m in ("fgsm_rs", "n_fgsm", "free_at") for d in ("total", "dgba")}
FAST.add("fgsm_rs[gradalign=0.2]:total")
DEFENSES = {
    "none",
    "adv_train:pgd-total",
    "adv_train[adv_only]:pgd-total",
    "adv_train[adv_only]:pgd-dgba",
    *FAST,
}


@pytest.mark.slow
def test_study_fast_at_smoke(tmp_path: Path) -> None:
    proc = run_entry_point("mtl_robust.pipeline", ["experiment=study_fast_at_smoke"], tmp_path, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(ResultsStore(tmp_path / "logs" / "results" / "fast_at_smoke.jsonl").latest().values())
    assert rows and all(r["status"] == "ok" for r in rows)
    cells = {(r["config"]["layout_name"], r["config"]["defense"], r["config"]["direction"]) for r in rows}
    assert cells == {
        ("all_shared", defense, direction)
        for defense in DEFENSES
        for direction in ("total", "dgba", "ensemble")
    }
    assert all(r["config"]["training"]["co_watch"]["checks"] >= 1 for r in rows)
    assert all("diagnostics" in r["results"] for r in rows)

    report = tmp_path / "logs" / "reports" / "fast_at_smoke"
    summary = (report / "summary.md").read_text()
    assert "## Training cost vs robustness" in summary
    assert "Paired comparison: fast AT vs PGD-AT" in summary
    (table,) = sorted((report / "tables").glob("cost_*.csv"))
    assert len(list((report / "plots").glob("cost_*.png"))) == 1
    # a model flagged by the diagnostics or as undertrained carries the mark in its defense cell
    by_defense = {row["defense"].removesuffix(f" {FLAG_MARK}"): row for row in csv.DictReader(table.open())}
    assert set(by_defense) == DEFENSES
    per_iteration = {d: float(row["passes/iter ×clean"]) for d, row in by_defense.items()}
    # counted passes: PGD-AT 1 clean + 10 attack + 1 adversarial forward+backward, 11 without the clean
    # step; FGSM-RS/N-FGSM 2; Free AT 4 replays (one shared backward each with TOTAL; one more input-only
    # backward with DGBA)
    assert per_iteration["adv_train:pgd-total"] == pytest.approx(12)
    assert per_iteration["adv_train[adv_only]:pgd-total"] == pytest.approx(11)
    assert per_iteration["fgsm_rs:dgba"] == per_iteration["n_fgsm:total"] == pytest.approx(2)
    assert per_iteration["free_at:total"] == pytest.approx(4)
    assert per_iteration["free_at:dgba"] == pytest.approx(6)
    # Free AT runs a quarter of the epochs: as many passes over the run as clean training
    assert float(by_defense["free_at:total"]["run passes ×clean"]) == pytest.approx(1)
    # every model under the ensemble; every fast variant paired with PGD-AT (adversarial examples only) of
    # its inner direction, with a CI, and one seed never carries a verdict about a training procedure
    assert all(row[ENSEMBLE_COLUMN] not in ("", "nan") for row in by_defense.values())
    for defense in FAST:
        row = by_defense[defense]
        assert "[" in row[VS_PGD_AT_COLUMN], (defense, row[VS_PGD_AT_COLUMN])
        assert row["verdict"].startswith(("too few seeds", "excluded")), row["verdict"]
    assert by_defense["adv_train:pgd-total"][VS_PGD_AT_COLUMN] == ""
