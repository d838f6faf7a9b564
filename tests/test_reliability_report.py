"""The reliability section on flagged models: who found the per-image worst case (gradient-free members,
adaptive options), and a warning where a flagged model's ensemble had no gradient-free member."""

from __future__ import annotations

from pathlib import Path

from mtl_robust.report.records import Record
from mtl_robust.report.reliability import flagged_worst_case, member_label, reliability_section
from mtl_robust.report.tables import Table

MEMBERS = {
    "apgd-dgba": {"method": "apgd", "steps": 10, "direction": "dgba", "eot_samples": 4},
    "apgd-single": {"method": "apgd", "steps": 10, "direction": "single"},
    "square-dgba": {"method": "square", "queries": 100, "direction": "dgba"},
}


def ensemble_row(layout: str, flags: list[str], wins: dict[str, dict[str, int]], members=MEMBERS, **config):
    names = list(next(iter(wins.values())))
    member_rows = {m: {"rel_avg": -0.01, "rel_task": {"seg": -0.01}} for m in names}
    results = {
        "rel_avg": -0.02,
        "diagnostics": {"flags": flags},
        "ensemble": {
            "primary": "joint",
            "rules": {r: {"rel_avg": -0.02, "rel_task": {"seg": -0.02}} for r in wins},
            "members": member_rows,
            "wins": wins,
        },
    }
    row_config = {
        "method": "ensemble",
        "direction": "ensemble",
        "eps": 8 / 255,
        "data": "synthetic",
        "backbone": "small_resnet",
        "defense": "none",
        "layout_name": layout,
        "tasks": ["seg"],
        "members": members,
        "member_names": names,
        **config,
    }
    return Record("s", layout, "ok", 0.0, row_config, results, "", Path("."))


def test_a_flagged_models_worst_case_names_its_members_gradient_free_ones_and_options():
    wins = {
        "task:seg": {"apgd-dgba": 1, "apgd-single:seg": 0, "square-dgba": 3},
        "joint": {"apgd-dgba": 2, "apgd-single:seg": 0, "square-dgba": 2},
    }
    flagged = ensemble_row("all_shared", ["zero_input_gradients:seg"], wins, bpda="quantise")
    clean = ensemble_row("independent", [], wins)
    tables, notes = flagged_worst_case([flagged, clean])
    (table,) = tables
    assert [row[0].split()[0] for row in table.rows] == ["all_shared", "all_shared"]  # flagged only
    joint, seg = table.rows
    assert joint[2] == "joint" and seg[2] == "task:seg"  # the primary rule first
    assert joint[3] == "apgd-dgba [eot_samples=4] 2/4; square-dgba [gradient-free] 2/4"
    assert seg[3] == "square-dgba [gradient-free] 3/4; apgd-dgba [eot_samples=4] 1/4"
    assert (joint[4], seg[4], joint[5]) == ("2/4", "3/4", "bpda=quantise")
    assert notes == [
        "flagged model all_shared (none, synthetic, ε=8/255): gradient-free members (square-dgba) found the "
        "joint worst case on 2 of 4 images"
    ]
    assert member_label(flagged, "apgd-single:seg") == "apgd-single:seg"  # a per-task copy shares its config


def test_a_flagged_model_without_a_gradient_free_member_is_warned_about():
    members = {k: v for k, v in MEMBERS.items() if k != "square-dgba"}
    wins = {"joint": {"apgd-dgba": 3, "apgd-single:seg": 1}}
    row = ensemble_row("all_shared", ["zero_input_gradients:seg"], wins, members=members)
    tables, notes = flagged_worst_case([row])
    assert tables[0].rows[0][4] == "no gradient-free member"
    assert notes[0].startswith("WARNING: flagged model all_shared") and "gradient-free" in notes[0]
    section, warnings = reliability_section([row], lambda t: Table.__name__ + t.title)
    assert "Who found the worst case of flagged models" in section
    assert any(w.startswith("WARNING: flagged model all_shared") for w in warnings)
