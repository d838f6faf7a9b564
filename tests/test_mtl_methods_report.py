"""The multi-task methods section on a hand-built store: LibMTL's Delta_p vs EW, robustness under PGD and
the ensemble, the illusion gap, flags, and verdicts only from enough unflagged seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtl_robust.report.mtl_methods import SeedModel, delta_p, methods_tables, mtl_methods_section
from mtl_robust.report.records import Record
from mtl_robust.report.tables import Table

HIB = {"seg": {"miou": True}, "depth": {"abs_err": False}}


def row(method: str, seed: int, attack: str, rel: float, clean=(0.5, 1.0), flags=(), defense="none"):
    """One row of a model trained with `method` (`attack`: 'pgd-dgba', 'pgd-weighted' or 'ensemble')."""
    name, _, direction = attack.partition("-")
    config = {
        "method": name,
        "direction": direction or "ensemble",
        "eps": 8 / 255,
        "data": "synthetic",
        "backbone": "small_resnet",
        "layout_name": "all_shared",
        "defense": defense if method == "ew" else f"{defense}+{method}",
        "train_seed": seed,
        "tasks": ["seg", "depth"],
    }
    results = {
        "rel_avg": rel / 100,
        "clean": {"seg": {"miou": clean[0]}, "depth": {"abs_err": clean[1]}},
        "higher_is_better": HIB,
        "diagnostics": {"flags": list(flags)},
    }
    return Record("", f"{method}{seed}{attack}", "ok", 0.0, config, results, "", Path("."))


def model(method: str, seed: int, dgba: float, ensemble: float, **kw) -> list[Record]:
    return [
        row(method, seed, "pgd-dgba", dgba, **kw),
        row(method, seed, "pgd-weighted", dgba - 1, **kw),
        row(method, seed, "ensemble", ensemble, **kw),
    ]


def by_method(table: Table) -> dict[str, dict[str, object]]:
    return {r[2]: dict(zip(table.columns, r, strict=True)) for r in table.rows}


def study(seeds=(0, 1, 2), pcgrad_flags=(), ew_flags=()) -> list[Record]:
    records = []
    for s in seeds:
        records += model("ew", s, dgba=-10 - s, ensemble=-12 - s, flags=ew_flags)
        # 10 % better miou and 10 % lower depth error than EW: Delta_p = +10 %; PGD says -10, the ensemble
        # finds -30: a 20-point illusion, and less robust than EW under the ensemble
        records += model("pcgrad", s, -10 + 0.5 * s, -30 - s, clean=(0.55, 0.9), flags=pcgrad_flags)
    return records


def test_delta_p_is_libmtls_measure() -> None:
    m = SeedModel(clean={"seg": {"miou": 0.55}, "depth": {"abs_err": 0.9}}, higher_is_better=HIB)
    assert delta_p(m, {"seg": {"miou": 0.5}, "depth": {"abs_err": 1.0}}) == pytest.approx(10.0)
    # a metric whose EW value is 0 is left out, not divided by
    assert delta_p(m, {"seg": {"miou": 0.0}, "depth": {"abs_err": 1.0}}) == pytest.approx(10.0)


def test_each_method_against_ew_with_cis_over_seeds_and_verdicts() -> None:
    (table,), notes = methods_tables(study())
    assert not notes
    rows = by_method(table)
    assert list(rows) == ["ew", "pcgrad"]  # EW first, then the config group's order
    ew, pcgrad = rows["ew"], rows["pcgrad"]
    assert ew["clean Δp vs EW (%)"] == "0.00 [0.00, 0.00]" and ew["vs EW under the ensemble"] == "(baseline)"
    assert pcgrad["seeds"] == 3 and pcgrad["clean Δp vs EW (%)"] == "10.00 [10.00, 10.00]"
    assert pcgrad["ensemble"].startswith("-31.00 [")
    assert pcgrad["PGD-WEIGHTED"].startswith("-10.50 [")
    assert pcgrad["illusion gap (pp)"].startswith("21.50 [")
    assert pcgrad["vs EW under the ensemble"] == "less robust than EW"
    assert pcgrad["illusion"] == "PGD overstates robustness"
    assert ew["illusion"] == "PGD overstates robustness"  # EW's own gap: 2 points, every seed


def test_no_verdict_from_too_few_seeds_or_flagged_models() -> None:
    (table,), _ = methods_tables(study(seeds=(0, 1)))
    assert by_method(table)["pcgrad"]["vs EW under the ensemble"] == "too few seeds (2 < 3): no verdict"
    (table,), _ = methods_tables(study(pcgrad_flags=["zero_input_gradients:seg"]))
    pcgrad = by_method(table)["pcgrad"]
    assert pcgrad["flags"] == "zero_input_gradients:seg"
    assert pcgrad["vs EW under the ensemble"] == "excluded: flagged model"
    assert pcgrad["illusion"].startswith("excluded: flagged model")
    (table,), _ = methods_tables(study(ew_flags=["undertrained:seg"]))
    pcgrad = by_method(table)["pcgrad"]
    assert pcgrad["vs EW under the ensemble"] == "excluded: flagged EW model"
    assert pcgrad["illusion"] == "PGD overstates robustness"  # its own models are clear
    (table,), _ = methods_tables(study(pcgrad_flags=["zero_input_gradients:seg"]), include_flagged=True)
    assert by_method(table)["pcgrad"]["vs EW under the ensemble"] == "less robust than EW"


def test_the_section_appears_only_with_more_than_one_method(tmp_path) -> None:
    only_ew = [r for r in study() if r.config["defense"] == "none"]
    assert mtl_methods_section(only_ew, lambda t: t.title) == (None, [])
    section, _ = mtl_methods_section(study(), lambda t: t.title)
    assert "## Multi-task methods: promise or illusion" in section
    from mtl_robust.report import write_report

    write_report(study(), tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Multi-task methods: promise or illusion" in summary and "PGD overstates robustness" in summary
