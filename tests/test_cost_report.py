"""Report section on training cost vs robustness, from rows that carry their checkpoint's training cost."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.report import write_report
from mtl_robust.report.cost import cost_sets
from mtl_robust.report.records import load_records

HIB = {"seg": {"miou": True}, "depth": {"abs_err": False}}


def cost(passes: float, seconds: float, iterations: int = 10, collapsed: bool = False) -> dict:
    return {
        "cost": {
            "iterations": iterations,
            "optimizer_steps": iterations,
            "forward_passes": passes / 2 * iterations,
            "backward_passes": passes / 2 * iterations,
            "seconds": seconds * iterations,
            "passes_per_iteration": passes,
            "seconds_per_iteration": seconds,
        },
        "co_watch": {"checks": 3, "collapsed": collapsed, "collapse_at": "step 6" if collapsed else None},
    }


def write_rows(
    path: Path, layout: str, defense: str, training: dict | None, avg: dict, clean_miou: float
) -> None:
    store = ResultsStore(path)
    for direction, value in avg.items():
        config = {
            "study": "fast_at_smoke",
            "data": "synthetic",
            "backbone": "small_resnet",
            "layout_name": layout,
            "sharing_score": 3,
            "tasks": ["seg", "depth"],
            "defense": defense,
            "method": "pgd",
            "direction": direction,
            "eps": 8 / 255,
        }
        if training is not None:
            config["training"] = training
        results = {
            "clean": {"seg": {"miou": clean_miou}, "depth": {"abs_err": 0.5}},
            "higher_is_better": HIB,
            "rel_task": {"seg": value, "depth": value},
            "rel_avg": value,
        }
        store.append(f"{layout}-{defense}-{direction}", config, results)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "fast_at_smoke.jsonl"
    write_rows(path, "all_shared", "none", cost(2, 0.1), {"total": -0.6, "dgba": -0.8}, 0.5)
    write_rows(path, "all_shared", "adv_train:pgd-total", cost(24, 1.2), {"total": -0.2, "dgba": -0.4}, 0.4)
    write_rows(
        path, "all_shared", "fgsm_rs:dgba", cost(4, 0.2, collapsed=True), {"total": -0.3, "dgba": -0.44}, 0.45
    )
    write_rows(
        path, "all_shared", "free_at:total", cost(8, 0.4, iterations=3), {"total": -0.25, "dgba": -0.5}, 0.5
    )
    write_rows(
        path, "independent", "adv_train:pgd-total", None, {"total": -0.1, "dgba": -0.2}, 0.4
    )  # old ckpt
    return path


def test_ratios_are_to_the_clean_model_of_the_same_layout(store: Path) -> None:
    sets, notes = cost_sets(load_records([store]))
    assert [s.layout_name for s in sets] == ["all_shared"], "rows without a training cost are left out"
    rows = {r.defense: r for r in sets[0].rows}
    assert list(rows)[0] == "none"
    assert rows["adv_train:pgd-total"].pass_ratio == pytest.approx(12)
    assert rows["adv_train:pgd-total"].time_ratio == pytest.approx(12)
    assert rows["fgsm_rs:dgba"].pass_ratio == pytest.approx(2)
    # Free AT: 4x per iteration, but 3 iterations instead of 10 over the run
    assert rows["free_at:total"].pass_ratio == pytest.approx(4)
    assert rows["free_at:total"].run_pass_ratio == pytest.approx(4 * 3 / 10)
    assert rows["fgsm_rs:dgba"].dgba == pytest.approx(-44)
    assert rows["fgsm_rs:dgba"].dgba_vs_paper_at == pytest.approx(10)  # -44 vs -40: a 10 % larger drop
    assert rows["adv_train:pgd-total"].clean_change == pytest.approx(-10)  # mean of miou -20 % and depth 0 %
    assert "collapse at step 6" in rows["fgsm_rs:dgba"].watch
    assert "no collapse" in rows["none"].watch
    assert rows["none"].dgba_vs_paper_at == pytest.approx(100)
    assert math.isfinite(rows["none"].time_ratio) and not notes


def test_the_report_has_the_section_table_and_plot(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report(load_records([store]), out, [store])
    summary = (out / "summary.md").read_text()
    assert "## Training cost vs robustness" in summary and "passes/iter ×clean" in summary
    assert list((out / "plots").glob("cost_*.png")) and list((out / "tables").glob("cost_*.csv"))


def test_no_section_without_training_costs(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    write_rows(path, "all_shared", "none", None, {"total": -0.6, "dgba": -0.8}, 0.5)
    out = tmp_path / "report"
    write_report(load_records([path]), out, [path])
    assert "Training cost vs robustness" not in (out / "summary.md").read_text()


def test_fast_variants_are_paired_with_pgd_at_on_adversarial_examples_only() -> None:
    from mtl_robust.report.uncertainty import pgd_at_like

    assert pgd_at_like("fgsm_rs:total") == "adv_train[adv_only]:pgd-total"
    assert pgd_at_like("fgsm_rs[gradalign=0.2]:dgba") == "adv_train[adv_only]:pgd-dgba"
    assert pgd_at_like("free_at[m=8]:single:seg") == "adv_train[adv_only]:pgd-single:seg"
    assert pgd_at_like("adv_train:pgd-total") is None and pgd_at_like("none") is None


def test_the_cost_table_quotes_the_ensemble_and_the_paired_comparison(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from mtl_robust.report.cost import ENSEMBLE_COLUMN, VS_PGD_AT_COLUMN
    from mtl_robust.report.uncertainty import FAST_VS_PGD_AT

    path = tmp_path / "fast_at_smoke.jsonl"
    defenses = {"none": (cost(2, 0.1), -0.6), "adv_train[adv_only]:pgd-total": (cost(22, 1.1), -0.2)}
    defenses["fgsm_rs:total"] = (cost(4, 0.2), -0.3)
    for defense, (training, value) in defenses.items():
        write_rows(path, "all_shared", defense, training, {"total": value, "dgba": value - 0.1}, 0.5)
    store = ResultsStore(path)
    for defense, (training, value) in defenses.items():  # the ensemble's row: one per model and eps
        config = {
            "study": "fast_at_smoke",
            "data": "synthetic",
            "backbone": "small_resnet",
            "layout_name": "all_shared",
            "tasks": ["seg", "depth"],
            "defense": defense,
            "method": "ensemble",
            "direction": "ensemble",
            "eps": 8 / 255,
            "training": training,
        }
        results = {"clean": {"seg": {"miou": 0.5}}, "higher_is_better": HIB, "rel_avg": value - 0.2}
        store.append(f"{defense}-ensemble", config, results)
    records = load_records([path])
    fast = next(r for r in records if r.defense == "fgsm_rs:total" and r.method == "ensemble")
    paired = SimpleNamespace(
        kind=FAST_VS_PGD_AT,
        a="fgsm_rs:total",
        context={"group": SimpleNamespace(first=fast), "data": "synthetic", "backbone": "small_resnet"}
        | {"layout": "all_shared", "method": "ensemble", "eps": 8 / 255},
        estimate=SimpleNamespace(mean=-0.1, low=-0.15, high=-0.05),
        verdict=lambda: "too few seeds (1 < 3): no verdict",
    )
    (cs,) = cost_sets(records, comparisons=[paired])[0]
    rows = {r.defense: r for r in cs.rows}
    assert rows["fgsm_rs:total"].ensemble == pytest.approx(-50)
    assert rows["fgsm_rs:total"].vs_pgd_at == "-10.00 [-15.00, -5.00]"
    assert rows["fgsm_rs:total"].vs_pgd_at_verdict.startswith("too few seeds")
    assert rows["none"].vs_pgd_at == "" and rows["none"].ensemble == pytest.approx(-80)
    table = cs.table()
    assert table.columns[-3:] == [ENSEMBLE_COLUMN, VS_PGD_AT_COLUMN, "verdict"]
    # without ensemble rows the table keeps its columns
    plain = [r for r in records if r.method != "ensemble"]
    (cs_plain,) = cost_sets(plain)[0]
    assert ENSEMBLE_COLUMN not in cs_plain.table().columns
