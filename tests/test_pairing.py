"""Comparisons pair the right groups (full identity, seeds as an axis, the same image set) and give only
the verdicts the data can carry (seed minimum, Holm over the report, flagged models excluded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtl_robust.evaluation.per_image import save_stats
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.report import load_records
from mtl_robust.report.seeds import Analysis
from mtl_robust.report.tables import relative_tables
from mtl_robust.report.uncertainty import DGBA_VS_TOTAL, LAYOUT_VS_LAYOUT, uncertainty_tables
from mtl_robust.tasks import build_task

TASKS = {"edges": build_task("edges")}
N = 30


def row_config(layout: str, direction: str, seed: int, steps: int = 10, **extra) -> dict:
    return {
        "study": "pairing",
        "checkpoint": f"/ckpt/{layout}-{seed}.ckpt",
        "model_id": f"{layout}-{seed}",
        "data": "synthetic",
        "data_id": "images-a",
        "split": "val",
        "tasks": ["edges"],
        "backbone": "small_resnet",
        "layout": f"desc of {layout}",
        "layout_name": layout,
        "sharing_score": 0 if layout == "independent" else 3,
        "shared_fraction": 0.0 if layout == "independent" else 0.5,
        "defense": "none",
        "method": "pgd",
        "direction": direction,
        "eps": 8 / 255,
        "pixel_eps": 8,
        "steps": steps,
        "seed": seed,
        "train_seed": seed,
        **extra,
    }


def add_row(store: ResultsStore, folder: Path, config: dict, excess: float, rng, results: dict | None = None):
    """One evaluated cell with its per-image side files: clean error 1 per image, adversarial 1 + excess."""
    ones = np.ones(N)
    clean = {"edges": {"abs_sum": ones, "count": ones.astype(np.int64)}}
    adv = {"edges": {"abs_sum": 1.0 + excess + rng.normal(0, 0.02, N), "count": ones.astype(np.int64)}}
    key = config_key(config)
    side = folder / "per_image"
    side.mkdir(exist_ok=True)
    save_stats(side / f"clean_{key}.npz", clean, TASKS, image_set=config["data_id"])
    save_stats(side / f"{key}.npz", adv, TASKS)
    rel = -float(adv["edges"]["abs_sum"].mean() - 1.0)
    out = {
        "clean": {"edges": {"err": 1.0}},
        "rel_task": {"edges": rel},
        "rel_avg": rel,
        "per_image": {"clean": f"per_image/clean_{key}.npz", "adv": f"per_image/{key}.npz"},
        **(results or {}),
    }
    store.append(key, config, out)


def collision_store(path: Path, seeds: int = 3) -> Path:
    """The reported case: DGBA@10 steps, TOTAL@10 steps and DGBA@50 steps of one model."""
    store, rng = ResultsStore(path), np.random.default_rng(0)
    for seed in range(seeds):
        add_row(store, path.parent, row_config("all_shared", "dgba", seed, 10), 0.30 + 0.01 * seed, rng)
        add_row(store, path.parent, row_config("all_shared", "total", seed, 10), 0.20 + 0.01 * seed, rng)
        add_row(store, path.parent, row_config("all_shared", "dgba", seed, 50), 0.10 + 0.01 * seed, rng)
    return path


def test_comparison_pairs_on_the_full_identity_and_notes_the_unpaired_group(tmp_path: Path) -> None:
    analysis = Analysis.of(load_records([collision_store(tmp_path / "s.jsonl")]), replicates=200)
    _, comps = uncertainty_tables(analysis)
    (table,) = [t for t in comps if DGBA_VS_TOTAL in t.title]
    (row,) = table.rows
    delta = row[table.columns.index("Δ avg (pp)")]
    assert delta == pytest.approx(-10.0, abs=1.5)  # DGBA@10 (-30 %) against TOTAL@10 (-20 %), not DGBA@50
    assert "DGBA stronger" in row[-1]
    (note,) = [n for n in analysis.notes if n.startswith(DGBA_VS_TOTAL)]
    assert "steps=50" in note and "differ in steps" in note


def test_seeds_are_an_axis_of_the_relative_table_and_collisions_are_noted(tmp_path: Path) -> None:
    (table,), notes = relative_tables(load_records([collision_store(tmp_path / "s.jsonl")]))
    assert table.columns[-2:] == ["seeds", "avg std (%)"]
    dgba_rows = [r for r in table.rows if r[table.columns.index("direction")] == "DGBA"]
    (dgba,) = dgba_rows  # DGBA@10 and DGBA@50 collide at one position: one shown, with a note
    assert dgba[-2] == 3 and dgba[-1] > 0
    assert len(notes) == 1 and "differ in steps" in notes[0]


def test_no_verdict_about_layouts_below_the_seed_minimum_and_holm_family(tmp_path: Path) -> None:
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(1)
    for seed in range(2):
        for layout, excess in (("independent", 0.1), ("all_shared", 0.5)):
            add_row(store, tmp_path, row_config(layout, "dgba", seed), excess, rng)
            add_row(store, tmp_path, row_config(layout, "total", seed), excess / 2, rng)
    analysis = Analysis.of(load_records([tmp_path / "s.jsonl"]), replicates=200)
    _, comps = uncertainty_tables(analysis, min_seeds=3)
    layouts = next(t for t in comps if LAYOUT_VS_LAYOUT in t.title)
    assert all(row[-1].startswith("too few seeds (2 < 3)") for row in layouts.rows)
    dgba = next(t for t in comps if DGBA_VS_TOTAL in t.title)
    # one Holm family for the report: the two DGBA-vs-TOTAL verdicts (the layouts get none)
    assert "Holm over all 2 paired comparisons of this report" in layouts.description
    assert "Holm over all 2 paired comparisons of this report" in dgba.description
    assert all(row[-1] == "DGBA stronger" for row in dgba.rows)
    assert all(row[dgba.columns.index("raw decision")] == "significant" for row in dgba.rows)
    p, adjusted = dgba.column("p"), dgba.column("p (Holm)")
    assert all(a >= q for a, q in zip(adjusted, p))
    _, comps = uncertainty_tables(Analysis.of(load_records([tmp_path / "s.jsonl"]), 200), min_seeds=2)
    layouts = next(t for t in comps if LAYOUT_VS_LAYOUT in t.title)
    assert not any(row[-1].startswith("too few seeds") for row in layouts.rows)


def test_cells_on_another_image_set_are_not_paired(tmp_path: Path) -> None:
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(2)
    add_row(store, tmp_path, row_config("all_shared", "dgba", 0), 0.3, rng)
    add_row(store, tmp_path, row_config("all_shared", "total", 0, data_id="images-b"), 0.2, rng)
    records = load_records([tmp_path / "s.jsonl"])
    for r in records:  # the same data_id in the rows: only the side files tell the image sets apart
        r.config["data_id"] = "same"  # type: ignore[index]
    analysis = Analysis.of(records, replicates=50)
    _, comps = uncertainty_tables(analysis)
    assert not comps
    assert any("different image sets" in n for n in analysis.notes)


def test_undertrained_models_are_marked_and_get_no_verdict(tmp_path: Path) -> None:
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(3)
    trivial = {"trivial_baseline": {"edges": {"metrics": {"err": 1.02}, "higher_is_better": {"err": False}}}}
    for seed in range(3):
        add_row(store, tmp_path, row_config("all_shared", "dgba", seed), 0.3, rng, trivial)
        add_row(store, tmp_path, row_config("all_shared", "total", seed), 0.1, rng, trivial)
    records = load_records([tmp_path / "s.jsonl"])
    (table,), _ = relative_tables(records)
    assert all(row[0] == "all_shared ⚠" for row in table.rows)
    _, comps = uncertainty_tables(Analysis.of(records, replicates=100))
    (row,) = comps[0].rows
    assert row[-1] == "excluded: flagged model (undertrained:edges)"
    _, comps = uncertainty_tables(Analysis.of(records, replicates=100), include_flagged=True)
    assert comps[0].rows[0][-1] == "DGBA stronger"
