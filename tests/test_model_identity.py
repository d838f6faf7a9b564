"""Adversarial stores for the report's comparisons: every verdict is about the models it names (training
recipes, not seed numbers, decide what pairs), measures that cannot blow up silently, and flagged models
kept out of verdicts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mtl_robust.evaluation.per_image import save_stats
from mtl_robust.evaluation.relative import compare, near_zero_floors
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.report import load_records
from mtl_robust.report.seeds import Analysis
from mtl_robust.report.uncertainty import AT_VS_CLEAN, DGBA_VS_SINGLE, DGBA_VS_TOTAL, uncertainty_tables
from mtl_robust.tasks import build_task
from mtl_robust.values.recipe import TrainingRecipe

TASKS = {"edges": build_task("edges")}
N = 40


def recipe(
    epochs: int = 20, defense: str = "none", eps: str | None = None, layout: str = "all_shared"
) -> dict:
    settings = {"model.layout": layout, "train.max_epochs": epochs, "defense.name": defense}
    if eps is not None:
        settings["defense.attack.eps"] = eps
    return settings


def config(direction: str, seed: int, settings: dict | None, defense: str = "none", **extra) -> dict:
    out = {
        "study": "identity",
        "model_id": f"{defense}-{seed}-{TrainingRecipe(settings).fingerprint if settings else 'old'}",
        "data": "synthetic",
        "data_id": "images-a",
        "split": "val",
        "tasks": ["edges"],
        "backbone": "small_resnet",
        "layout": "desc",
        "layout_name": (settings or {}).get("model.layout", "all_shared"),
        "defense": defense,
        "method": "pgd",
        "direction": direction,
        "eps": 8 / 255,
        "steps": 10,
        "seed": seed,
        "train_seed": seed,
        **extra,
    }
    if settings is not None:
        out |= {"recipe": settings, "recipe_id": TrainingRecipe(settings).fingerprint}
    return out


def add(
    store: ResultsStore, folder: Path, cfg: dict, clean: float, adv: float, rng, results: dict | None = None
):
    """A cell with per-image statistics: clean error `clean` per image, adversarial error about `adv`."""
    ones = np.ones(N)
    clean_stats = {"edges": {"abs_sum": clean * ones, "count": ones.astype(np.int64)}}
    adv_sum = np.abs(adv + rng.normal(0, 0.01 * max(adv, 1e-3), N)) if math.isfinite(adv) else adv * ones
    adv_stats = {"edges": {"abs_sum": adv_sum, "count": ones.astype(np.int64)}}
    key = config_key(cfg)
    side = folder / "per_image"
    side.mkdir(exist_ok=True)
    clean_file = side / f"clean_{config_key({'m': cfg['model_id']})}.npz"
    save_stats(clean_file, clean_stats, TASKS, image_set=cfg["data_id"])
    save_stats(side / f"{key}.npz", adv_stats, TASKS)
    change = compare(
        {"edges": {"err": clean}}, {"edges": {"err": float(adv_sum.mean())}}, {"edges": {"err": False}}
    )
    out = {
        "clean": {"edges": {"err": clean}},
        "rel_task": change.per_task,
        "rel_avg": change.average,
        "rel_nonfinite": change.nonfinite,
        "per_image": {"clean": f"per_image/{clean_file.name}", "adv": f"per_image/{key}.npz"},
        **(results or {}),
    }
    store.append(key, cfg, out)


def tables(path: Path, **kwargs):
    analysis = Analysis.of(load_records([path]), replicates=200)
    _, comps = uncertainty_tables(analysis, **kwargs)
    return {t.title.split(": ", 1)[1]: t for t in comps}, analysis.notes


def test_models_trained_differently_are_never_paired_by_seed_number(tmp_path: Path) -> None:
    """Before: DGBA on a 2-epoch model vs TOTAL on a 20-epoch one, same seed numbers: -40 pp, 'DGBA
    stronger'. After: different recipes, no pair, and a note."""
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(0)
    for seed in range(3):
        add(store, tmp_path, config("dgba", seed, recipe(epochs=2)), 1.0, 1.6, rng)
        add(store, tmp_path, config("total", seed, recipe(epochs=20)), 1.0, 1.2, rng)
    found, notes = tables(tmp_path / "s.jsonl")
    assert DGBA_VS_TOTAL not in found
    assert any(
        "(train.max_epochs=2) has no total partner" in n and "training recipe (train.max_epochs)" in n
        for n in notes
    ), notes
    # both recipes are shown, told apart by the setting that differs
    records = load_records([tmp_path / "s.jsonl"])
    assert {r.defense for r in records} == {"none (train.max_epochs=2)", "none (train.max_epochs=20)"}


def test_two_pgd_at_budgets_with_one_name_are_two_models(tmp_path: Path) -> None:
    """Before: AT-4 and AT-8 (both adv_train:pgd-total) collapsed, DGBA(AT-4) was paired with TOTAL(AT-8)
    and 'AT vs clean' silently used AT-8. After: each AT is its own model, paired within itself."""
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(1)
    at = "adv_train:pgd-total"
    for seed in range(3):
        for direction, excess in (("dgba", 0.6), ("total", 0.4)):
            add(store, tmp_path, config(direction, seed, recipe()), 1.0, 1.0 + excess, rng)
        add(
            store, tmp_path, config("dgba", seed, recipe(defense="adv_train", eps="4/255"), at), 1.0, 1.3, rng
        )
        add(
            store,
            tmp_path,
            config("total", seed, recipe(defense="adv_train", eps="4/255"), at),
            1.0,
            1.2,
            rng,
        )
        add(
            store, tmp_path, config("dgba", seed, recipe(defense="adv_train", eps="8/255"), at), 1.0, 1.1, rng
        )
        add(
            store,
            tmp_path,
            config("total", seed, recipe(defense="adv_train", eps="8/255"), at),
            1.0,
            1.05,
            rng,
        )
    found, _ = tables(tmp_path / "s.jsonl")
    dgba = found[DGBA_VS_TOTAL]
    deltas = {row[1]: row[dgba.columns.index("Δ avg (pp)")] for row in dgba.rows}
    at4, at8 = f"{at} (defense.attack.eps=4/255)", f"{at} (defense.attack.eps=8/255)"
    assert set(deltas) == {"none", at4, at8}
    assert deltas[at4] == pytest.approx(-10, abs=1.5) and deltas[at8] == pytest.approx(-5, abs=1.5)
    versus = found[AT_VS_CLEAN]
    assert sorted(row[versus.columns.index("difference")] for row in versus.rows) == sorted(
        f"{name} − none" for name in (at4, at4, at8, at8)
    )


def test_a_non_finite_metric_fails_the_average_with_a_note(tmp_path: Path) -> None:
    change = compare(
        {"keypoints": {"err": 0.2}, "edges": {"err": 0.5}},
        {"keypoints": {"err": math.inf}, "edges": {"err": 0.6}},
        {"keypoints": {"err": False}, "edges": {"err": False}},
    )
    assert math.isnan(change.average) and change.nonfinite == ["keypoints/err"]  # before: -20 % (edges)
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(2)
    add(store, tmp_path, config("dgba", 0, recipe()), 1.0, math.inf, rng)
    analysis = Analysis.of(load_records([tmp_path / "s.jsonl"]), replicates=50)
    assert any("non-finite metric (edges/err)" in n for n in analysis.notes)
    assert math.isnan(analysis.estimates[0].mean)


def test_a_near_zero_clean_metric_is_left_out_by_value_and_counted() -> None:
    """Before: a clean error of 0.002 going to 0.05 printed -2400 % (unbounded). After: left out of the
    average (trivial predictor's error 0.5: floor 0.025), listed; the capped measure is bounded anyway."""
    clean = {"depth": {"abs_err": 0.002, "rel_err": 0.3}}
    adv = {"depth": {"abs_err": 0.05, "rel_err": 0.36}}
    higher = {"depth": {"abs_err": False, "rel_err": False}}
    trivial = {"depth": {"metrics": {"abs_err": 0.5, "rel_err": 0.9}, "higher_is_better": higher["depth"]}}
    assert compare(clean, adv, higher).average == pytest.approx((-24.0 - 0.2) / 2)
    change = compare(clean, adv, higher, floors=near_zero_floors(trivial))
    assert change.excluded == ["depth/abs_err"] and change.average == pytest.approx(-0.2)
    assert compare(clean, adv, higher).average_capped == pytest.approx((-1.0 - 0.2) / 2)


def test_more_robust_compares_metrics_under_attack_like_with_like(tmp_path: Path) -> None:
    """An AT model from error 0.8 to 1.0 (-25 %) 'beat' a clean model from 0.2 to 0.6 (-200 %) by 175 pp;
    under attack the clean model's error is still the lower one."""
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(3)
    at = "adv_train:pgd-total"
    for seed in range(3):
        add(store, tmp_path, config("total", seed, recipe()), 0.2, 0.6, rng)
        add(store, tmp_path, config("total", seed, recipe(defense="adv_train"), at), 0.8, 1.0, rng)
    found, _ = tables(tmp_path / "s.jsonl")
    table = found[AT_VS_CLEAN]
    (row,) = table.rows
    assert row[table.columns.index("Δ avg (pp)")] == pytest.approx(175, abs=3)
    assert row[table.columns.index("Δ under attack (%)")] == pytest.approx(-66.7, abs=3)
    assert row[-1] == "none better under attack"


def test_disjoint_seeds_and_nan_groups_get_notes_and_a_fixed_order(tmp_path: Path) -> None:
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(4)
    for seed in (0, 1, 2):
        add(store, tmp_path, config("total", seed, None), 1.0, 1.2, rng)
    for seed in (3, 4, 5):
        add(store, tmp_path, config("dgba", seed, None), 1.0, 1.4, rng)
    _, notes = tables(tmp_path / "s.jsonl")
    assert any("share no seed number" in n for n in notes)
    assert any("without a recorded training recipe" in n or "no model of these rows" in n for n in notes)
    # a SINGLE group whose measure is NaN never wins 'best SINGLE', whatever the rows' order
    for order in ((0, 1), (1, 0)):
        path = tmp_path / f"single{order}.jsonl"
        store = ResultsStore(path)
        for seed in range(2):
            add(store, tmp_path, config("dgba", seed, recipe()), 1.0, 1.5, rng)
            singles = [("single:edges", 1.3), ("single:other", math.inf)]
            for index in order:
                direction, adv = singles[index]
                add(store, tmp_path, config(direction, seed, recipe()), 1.0, adv, rng)
        found, _ = tables(path)
        (row,) = found[DGBA_VS_SINGLE].rows
        assert row[found[DGBA_VS_SINGLE].columns.index("difference")] == "DGBA − SINGLE(edges)"


def test_gradient_masking_flags_exclude_a_model_from_verdicts(tmp_path: Path) -> None:
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(5)
    masked = {"diagnostics": {"flags": ["zero_input_gradients:edges"]}}
    for seed in range(3):
        add(store, tmp_path, config("dgba", seed, recipe()), 1.0, 1.5, rng, masked)
        add(store, tmp_path, config("total", seed, recipe()), 1.0, 1.2, rng, masked)
    found, _ = tables(tmp_path / "s.jsonl")
    (row,) = found[DGBA_VS_TOTAL].rows
    assert row[-1] == "excluded: flagged model (zero_input_gradients:edges)"
    found, _ = tables(tmp_path / "s.jsonl", include_flagged=True)
    assert found[DGBA_VS_TOTAL].rows[0][-1] == "DGBA stronger"


def test_one_seed_gives_no_verdict_between_attacks(tmp_path: Path) -> None:
    store, rng = ResultsStore(tmp_path / "s.jsonl"), np.random.default_rng(6)
    add(store, tmp_path, config("dgba", 0, recipe()), 1.0, 1.5, rng)
    add(store, tmp_path, config("total", 0, recipe()), 1.0, 1.2, rng)
    found, _ = tables(tmp_path / "s.jsonl")
    table = found[DGBA_VS_TOTAL]
    (row,) = table.rows
    assert row[table.columns.index("raw decision")] == "significant"  # the image noise of one model
    assert row[-1].startswith("too few seeds (1 < 2): no verdict")
