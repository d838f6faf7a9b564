"""The sweep planner: job expansion like Hydra's basic sweeper, pass counts per cell and per training."""

from __future__ import annotations

import pytest

from mtl_robust.planning.cost import cell_passes, direction_factor, training_passes
from mtl_robust.planning.plan import JobPlan, report
from mtl_robust.planning.sweep import compose_job, expand_jobs


def test_a_study_expands_to_its_sweep_and_the_command_line_wins():
    jobs = expand_jobs(["-m", "experiment=study_directions_smoke"])
    assert len(jobs) == 6  # 3 sharings x 2 defenses from the study's sweeper params
    narrowed = expand_jobs(["-m", "experiment=study_directions_smoke", "sharing=independent"])
    assert len(narrowed) == 2 and all("sharing=independent" in job for job in narrowed)
    paper = expand_jobs(["-m", "experiment=study_directions_paper", "launcher=slurm"])
    assert len(paper) == 14  # 7 layouts x 2 defenses


def test_a_comma_list_without_multirun_fails_clearly():
    with pytest.raises(ValueError, match="only with -m"):
        expand_jobs(["sharing=all_shared,independent"])
    assert expand_jobs(["sharing=independent"]) == [["sharing=independent"]]


def test_cell_passes_count_steps_restarts_tasks_and_members():
    assert cell_passes({"method": "fgsm"}, "dgba", 3) == pytest.approx(1 + 1 / 3)
    assert cell_passes({"method": "apgd", "steps": 10, "n_restarts": 2}, "total", 3) == pytest.approx(
        20 + 1 / 3
    )
    assert direction_factor("minmax", 3) == pytest.approx(7 / 3)  # one forward, three backwards
    ensemble = {
        "method": "ensemble",
        "rules": ["joint", "task"],
        "members": {"a": {"method": "pgd", "steps": 4, "direction": "minmax"}, "b": {"method": "fgsm"}},
    }
    assert cell_passes(ensemble, "ensemble", 3) == pytest.approx(4 * 7 / 3 + 1 / 3 + 1 + 1 / 3 + 2 / 3)


def test_adversarial_training_costs_its_attack_steps_more():
    clean = compose_job(["experiment=study_directions_smoke", "defense=none"])
    adv = compose_job(["experiment=study_directions_smoke", "defense=adv_train"])
    assert training_passes(adv) == pytest.approx(training_passes(clean) * 11)  # PGD-10 + the update


def test_the_report_sums_jobs():
    jobs = [
        JobPlan(["a=1"], False, 4, None, 100.0, 50.0, 0.01),
        JobPlan(["a=2"], True, 4, 4, 100.0, 0.0, 0.01),
    ]
    text = report(jobs, "slurm")
    assert "2 array tasks: 1 trainings to run (1 cached), 8 cells (4 already in the store)" in text


def test_fixed_costs_of_a_job_are_counted():
    from mtl_robust.planning.cost import co_watch_passes, diagnostics_passes, validation_passes

    cfg = compose_job(["experiment=study_fast_at_smoke", "defense=fgsm_rs"])
    # 32 val images, 4 epochs validated every 4th: the sanity check (2 batches of 32, capped at 32 images),
    # one validation after epoch 4 and the train job's final one, each a forward (a third of a pass)
    assert validation_passes(cfg) == pytest.approx((32 + 32 * 2) / 3)
    # 4 epochs x 4 batches = 16 steps, a check every 8: 2 checks of 4 images, FGSM + PGD-5 + 3 forwards
    assert co_watch_passes(cfg) == pytest.approx(2 * 4 * (1 + 5 + 1))
    # diagnostics: one batch of 32 images, 3 steps: 9 x 3 attack steps, a backward per task, 8 forwards
    assert diagnostics_passes(cfg, 3, 32) == pytest.approx(32 * (27 + 3 + 8 / 3))
    plain = compose_job(["experiment=smoke"])
    assert co_watch_passes(plain) == 0 and diagnostics_passes(plain, 3, 32) == 0


def test_a_single_member_without_a_task_runs_once_per_task():
    member = {"method": "pgd", "steps": 4}
    one = {"method": "ensemble", "rules": ["joint"], "members": {"s": {**member, "direction": "single:seg"}}}
    each = {"method": "ensemble", "rules": ["joint"], "members": {"s": {**member, "direction": "single"}}}
    assert cell_passes(each, "ensemble", 3) - 1 / 3 == pytest.approx(
        3 * (cell_passes(one, "ensemble", 3) - 1 / 3)
    )


def test_help_and_unknown_options_do_not_reach_hydra(capsys: pytest.CaptureFixture) -> None:
    from mtl_robust.planning.plan import main

    main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m mtl_robust.plan")
    with pytest.raises(SystemExit, match="unknown option.*--devcie=cuda"):
        main(["--devcie=cuda", "-m", "experiment=study_directions_smoke"])


def test_square_costs_a_forward_per_query_as_the_attack_counts_them():
    from mtl_robust.attacks.directions import DIRECTIONS
    from mtl_robust.attacks.square import Square
    from mtl_robust.planning.cost import CLEAN_STATE_DIRECTIONS

    assert set(CLEAN_STATE_DIRECTIONS) == {n for n, cls in DIRECTIONS.items() if cls.needs_init}
    for direction in ("dgba", "minmax"):
        config = {"method": "square", "queries": 300, "n_restarts": 2}
        counted = Square(8 / 255, queries=300, n_restarts=2, direction=direction).queries_per_image
        assert cell_passes(config, direction, 3) == pytest.approx((counted + 1) / 3)
        eot = Square(8 / 255, queries=300, n_restarts=2, direction=direction, eot_samples=4).queries_per_image
        assert cell_passes({**config, "eot_samples": 4}, direction, 3) == pytest.approx((eot + 1) / 3)
    square = {"method": "square", "queries": 90}
    ensemble = {"method": "ensemble", "rules": ["joint"], "members": {"s": square}}
    assert cell_passes(ensemble, "ensemble", 3) == pytest.approx(90 / 3 + 1 / 3 + 1 / 3)


def test_adversarial_training_with_square_costs_its_forwards():
    clean = compose_job(["experiment=study_directions_smoke", "defense=none"])
    square = compose_job(
        ["experiment=study_directions_smoke", "defense=adv_train", "++defense.attack.method=square"]
        + ["++defense.attack.queries=30", "defense.direction.name=minmax"]
    )
    assert training_passes(square) == pytest.approx(training_passes(clean) * (1 + 31 / 3))
