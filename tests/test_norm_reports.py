"""Reports under several threat models: an L2/L1 radius prints as itself (0.75, not 191/255) wherever a
budget is printed, L-inf budgets keep their pixel steps (8/255), and rows of different norms never share a
table."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from mtl_robust.evaluation.progress import CellProgress
from mtl_robust.evaluation.runner import format_rows
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.jobs.loggers import run_name, run_tags
from mtl_robust.jobs.report import main
from mtl_robust.report.records import Record, attack_eps, load_records
from mtl_robust.report.tables import relative_tables
from mtl_robust.values.budget import eps_axis, eps_slug, format_eps, format_pixels
from mtl_robust.values.norm import L2, label_norm, method_label
from tests.test_report import TASKS, config, results

L2_RADIUS = 0.75


def test_format_eps_is_norm_aware() -> None:
    assert format_eps(8 / 255) == format_eps(8 / 255, "linf") == format_eps(8 / 255, None) == "8/255"
    assert format_eps(0.5 / 255, "linf") == "0.5/255"
    assert format_eps(L2_RADIUS, "l2") == format_eps(L2_RADIUS, L2) == "0.75"
    assert format_eps(12.0, "l1:0.05") == "12"
    assert format_eps(float("nan"), "l2") == "?"
    assert eps_slug(8 / 255) == "eps8" and eps_slug(L2_RADIUS, "l2") == "eps0p75"
    assert format_pixels(8 / 255, ".1f") == "8.0/255" and format_pixels(L2_RADIUS, ".1f", norm="l2") == "0.75"
    assert eps_axis(8 / 255) == pytest.approx(8.0) and eps_axis(L2_RADIUS, "l2") == L2_RADIUS


def test_method_labels_round_trip_their_norm() -> None:
    assert method_label("pgd", None) == method_label("pgd", "linf") == "pgd"
    assert method_label("pgd", "l2") == "pgd[l2]" and method_label("apgd", "l1:0.05") == "apgd[l1:0.05]"
    for label, norm in (("pgd", "linf"), ("pgd[l2]", "l2"), ("apgd[l1:0.05]", "l1:0.05")):
        assert label_norm(label) == norm
    assert attack_eps(L2_RADIUS, "pgd[l2]") == "0.75" and attack_eps(8 / 255, "pgd") == "8/255"


def _row_config(layout: str, direction: str, norm: str | None) -> dict:
    cfg = config(layout, direction, 8)
    if norm is not None:  # L-inf stays out of rows, as the attack writes them
        cfg.update(norm=norm, eps=L2_RADIUS, pixel_eps=L2_RADIUS * 255)
    return cfg


def _store(path: Path) -> Path:
    store = ResultsStore(path)
    for norm in (None, "l2"):
        for layout in ("all_shared", "independent"):
            for direction in ("total", "dgba"):
                cfg = _row_config(layout, direction, norm)
                rel = {t: (-0.2 if norm is None else -0.1) for t in TASKS}
                store.append(config_key(cfg), cfg, results(layout, rel))
    return path


def test_an_l2_row_renders_its_radius_in_the_report_tables(tmp_path: Path) -> None:
    store = _store(tmp_path / "results.jsonl")
    tables, _ = relative_tables(load_records([store]))
    titles = sorted(t.title for t in tables)
    assert len(tables) == 2  # one table per norm: the rows never share one
    assert any("PGD[L2] ε=0.75" in t for t in titles), titles
    assert any("PGD ε=8/255" in t for t in titles), titles
    assert not any("191" in t for t in titles)
    names = sorted(t.name for t in tables)
    assert any("eps0p75" in n for n in names) and any("eps8" in n for n in names), names

    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--store", str(store), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "PGD[L2] ε=0.75" in summary and "PGD ε=8/255" in summary
    assert "191/255" not in summary and "191.25" not in summary


def test_terminal_lines_and_wandb_names_print_the_radius() -> None:
    l2 = _row_config("all_shared", "dgba", "l2")
    linf = _row_config("all_shared", "dgba", None)
    rel = {t: -0.1 for t in TASKS}
    rows = [{"config": c, "status": "ok", "results": results("all_shared", rel)} for c in (l2, linf)]
    l2_line, linf_line = format_rows(rows, TASKS).splitlines()[2:]
    assert l2_line.startswith("pgd[l2]") and " 0.75 " in l2_line
    assert linf_line.startswith("pgd ") and "8.0/255" in linf_line
    assert run_name(l2).endswith("-pgd[l2]-dgba-eps0.75") and run_name(linf).endswith("-pgd-dgba-eps8")
    assert "eps=0.75" in run_tags(l2) and "pgd[l2]" in run_tags(l2) and "eps=8/255" in run_tags(linf)
    progress = io.StringIO()
    CellProgress(1, stream=progress, prefix="").skipped(l2)
    assert "cell 1/1 pgd[l2] dgba eps=0.75:" in progress.getvalue()


def test_a_record_prints_its_budget_under_its_norm() -> None:
    l2 = Record("s", "k", "ok", 0.0, _row_config("all_shared", "dgba", "l2"), {}, "", Path("."))
    linf = Record("s", "k", "ok", 0.0, _row_config("all_shared", "dgba", None), {}, "", Path("."))
    assert (l2.eps_text, l2.method) == ("0.75", "pgd[l2]")
    assert (linf.eps_text, linf.method) == ("8/255", "pgd")


# ------------------------------------------------------------------ ensembles and costs, grouped by norm
def _ensemble_record(layout: str, norm: str | None, joint: float) -> Record:
    from tests.test_reliability_report import ensemble_row

    wins = {"joint": {"apgd-dgba": 3, "square-dgba": 1}}
    extra = {} if norm is None else {"norm": norm, "eps": L2_RADIUS}
    row = ensemble_row(layout, [], wins, **extra)
    row.results["ensemble"]["rules"]["joint"]["rel_avg"] = joint
    return row


def test_l2_ensembles_get_their_own_reliability_tables_labelled_with_the_norm() -> None:
    from mtl_robust.report.reliability import members_vs_ensemble, per_task_worst_case, ranking_notes

    rows = [
        _ensemble_record("all_shared", None, -0.3),
        _ensemble_record("independent", None, -0.2),
        _ensemble_record("all_shared", "l2", -0.1),
        _ensemble_record("independent", "l2", -0.05),
    ]
    tables = members_vs_ensemble(rows)
    assert [t.title for t in tables] == [
        "Members vs ensemble · synthetic · small_resnet · ε=8/255",  # L-inf first, titled as before norms
        "Members vs ensemble · synthetic · small_resnet · L2 ε=0.75",
    ]
    assert tables[0].name != tables[1].name and "l2" in tables[1].name and "eps0p75" in tables[1].name
    joint = tables[1].columns.index("ensemble joint (%)")
    assert [row[joint] for row in tables[1].rows] == pytest.approx([-10.0, -5.0])  # only the L2 rows
    assert [t.title.split(" · ")[-1] for t in per_task_worst_case(rows)] == ["ε=8/255", "L2 ε=0.75"]
    notes = ranking_notes(rows)
    assert any(n.startswith("synthetic/small_resnet L2 ε=0.75 defense none") for n in notes), notes


def _cost_rows(path: Path, norm: str | None, defense: str, passes: float, value: float) -> None:
    from tests.test_cost_report import HIB, cost

    store = ResultsStore(path)
    for direction in ("total", "dgba", "ensemble"):
        cfg = {
            "study": "threat_models",
            "data": "synthetic",
            "backbone": "small_resnet",
            "layout_name": "all_shared",
            "tasks": ["seg", "depth"],
            "defense": defense,
            "method": "ensemble" if direction == "ensemble" else "pgd",
            "direction": direction,
            "eps": 8 / 255 if norm is None else L2_RADIUS,
            "training": cost(passes, passes / 20),
        }
        if norm is not None:
            cfg["norm"] = norm
        shift = {"total": 0.0, "dgba": -0.1, "ensemble": -0.2}[direction]
        results = {
            "clean": {"seg": {"miou": 0.5}, "depth": {"abs_err": 0.5}},
            "higher_is_better": HIB,
            "rel_task": {"seg": value + shift, "depth": value + shift},
            "rel_avg": value + shift,
        }
        store.append(f"{norm}-{defense}-{direction}", cfg, results)


def test_the_cost_report_has_a_set_per_norm_with_that_norms_ensemble(tmp_path: Path) -> None:
    from mtl_robust.report.cost import cost_sets

    path = tmp_path / "costs.jsonl"
    for norm, scale in ((None, 1.0), ("l2", 0.5)):
        _cost_rows(path, norm, "none", 2, -0.6 * scale)
        _cost_rows(path, norm, "adv_train:pgd-total", 24, -0.2 * scale)
    records = load_records([path])
    sets, notes = cost_sets(records)
    assert [(s.method, attack_eps(s.eps, s.method)) for s in sets] == [("pgd", "8/255"), ("pgd[l2]", "0.75")]
    linf, l2 = ({r.defense: r for r in s.rows} for s in sets)
    assert linf["none"].ensemble == pytest.approx(-80) and l2["none"].ensemble == pytest.approx(-50)
    assert l2["adv_train:pgd-total"].dgba == pytest.approx(-20) and not notes
    assert "PGD[L2] ε=0.75" in sets[1].title
    only_l2, _ = cost_sets(records, method="pgd[l2]")
    assert [s.method for s in only_l2] == ["pgd[l2]"]


def test_an_l2_pgd_at_recipe_records_its_radius_and_accepts_radii_above_one() -> None:
    from mtl_robust.jobs.recipe import training_recipe
    from mtl_robust.planning.sweep import compose_job

    def recorded(*overrides: str) -> str:
        return training_recipe(compose_job(["defense=adv_train", *overrides])).settings["defense.attack.eps"]

    assert recorded("defense.attack.norm=l2", "defense.attack.eps=0.5") == "0.5"  # not 127.5/255
    assert recorded("defense.attack.norm=l2", "defense.attack.eps=2.0") == "2"  # an L2 radius may exceed 1
    assert recorded("defense.attack.eps=8/255") == recorded("defense.attack.pixel_eps=8") == "8/255"


def test_the_report_command_selects_an_l2_radius_above_one() -> None:
    from mtl_robust.report.__main__ import build_parser

    args = build_parser().parse_args(["--store", "s.jsonl", "--out", "o", "--eps", "5.0"])
    assert args.eps == 5.0
    assert build_parser().parse_args(["--store", "s", "--out", "o", "--eps", "8/255"]).eps == 8 / 255
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--store", "s", "--out", "o", "--eps", "-1"])
