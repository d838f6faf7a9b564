"""The sweep planner: job expansion like Hydra's basic sweeper, the work of cells and trainings as the
attack and direction classes count it, layouts' FLOPs, and the plan's total."""

from __future__ import annotations

import pytest
import torch

from mtl_robust.planning.cost import (
    Work,
    cell_work,
    co_watch_work,
    defense_work,
    diagnostics_work,
    training_work,
    validation_work,
)
from mtl_robust.planning.plan import JobPlan, report
from mtl_robust.planning.sweep import JobComposer, compose_job, expand_jobs
from mtl_robust.planning.throughput import Seconds

TASKS = ["seg", "normal", "depth"]


def test_a_study_expands_to_its_sweep_and_the_command_line_wins():
    jobs = expand_jobs(["-m", "experiment=study_directions_smoke"])
    assert len(jobs) == 6  # 3 sharings x 2 defenses from the study's sweeper params
    narrowed = expand_jobs(["-m", "experiment=study_directions_smoke", "sharing=independent"])
    assert len(narrowed) == 2 and all("sharing=independent" in job for job in narrowed)
    paper = expand_jobs(["-m", "experiment=study_directions_paper", "launcher=slurm"])
    assert len(paper) == 14  # 7 layouts x 2 defenses


def _as_hydra_gives_it(cfg) -> dict:
    """The config a job computes from, and the overrides Hydra records (its runtime bookkeeping aside)."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False)
    hydra = tree.pop("hydra")
    return {**tree, "hydra": {k: hydra[k] for k in ("overrides", "sweeper", "callbacks", "run", "sweep")}}


@pytest.mark.parametrize(
    ("args", "compositions"),
    [
        (["-m", "experiment=study_directions_paper"], 2),  # 14 jobs: 7 layouts (values) x 2 defenses
        (
            ["-m", "experiment=study_fast_at_smoke", "+train.loss_weights.seg=2", "~eval.examples", "seed=3"],
            11,
        ),
        (
            ["-m", "experiment=study_transfer_smoke", "attack@pipeline.attacks.pgd=mim"],
            4,
        ),  # sharing is a group
    ],
)
def test_the_composer_gives_each_job_hydras_own_config(args: list[str], compositions: int) -> None:
    composer = JobComposer()
    for job in expand_jobs(args):
        assert _as_hydra_gives_it(composer(job)) == _as_hydra_gives_it(compose_job(job)), job
    assert len(composer._bases) == compositions


def test_the_composer_keeps_hydras_errors() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        JobComposer()(["experiment=smoke", "no_such_key=1"])


def test_a_comma_list_without_multirun_fails_clearly():
    with pytest.raises(ValueError, match="only with -m"):
        expand_jobs(["sharing=all_shared,independent"])
    assert expand_jobs(["sharing=independent"]) == [["sharing=independent"]]


def test_cells_count_steps_restarts_tasks_and_members():
    eps = {"eps": 8 / 255}
    assert cell_work({"method": "fgsm", **eps}, "dgba", TASKS) == Work(forwards=2, backwards=1)
    apgd = {"method": "apgd", "steps": 10, "n_restarts": 2, **eps}
    assert cell_work(apgd, "total", TASKS) == Work(forwards=21, backwards=20)
    # MINMAX: a clean forward for its state, then per step one forward and one backward per task
    assert cell_work({"method": "pgd", "steps": 4, **eps}, "minmax", TASKS) == Work(forwards=6, backwards=12)
    assert cell_work({"method": "pgd", "steps": 4, **eps}, "single:seg", TASKS) == Work(
        forwards=5, backwards=4
    )
    ensemble = {
        "method": "ensemble",
        "rules": ["joint", "task:seg"],
        **eps,
        "members": {"a": {"method": "pgd", "steps": 4, "direction": "minmax"}, "b": {"method": "fgsm"}},
    }
    # members (5 + 1 forwards, 12 + 1 backwards), the clean and member scores (3), one forward per rule (2)
    assert cell_work(ensemble, "ensemble", TASKS) == Work(forwards=11, backwards=13)


def test_every_direction_is_counted_by_its_own_class():
    """A direction that takes a backward per task says so; the planner needs no list of names."""
    from mtl_robust.attacks.directions import DIRECTIONS

    for name, cls in DIRECTIONS.items():
        if name in ("single",):
            continue
        try:
            work = cell_work({"method": "pgd", "steps": 3, "eps": 8 / 255}, name, TASKS)
        except (ValueError, TypeError):  # a direction that needs an argument or refuses PGD
            continue
        assert work.backwards == 3 * (len(TASKS) if cls.backward_per_task else 1), name
        assert work.forwards == 3 + int(cls.needs_init) + 1, name
    assert {n for n, c in DIRECTIONS.items() if c.backward_per_task} >= {
        "minmax",
        "sign_sum",
        "dgba_reference",
    }


def test_square_costs_a_forward_per_query_as_the_attack_counts_them():
    from mtl_robust.attacks.square import Square

    for direction in ("dgba", "minmax"):
        config = {"method": "square", "queries": 300, "n_restarts": 2, "eps": 8 / 255, "eot_samples": 4}
        counted = Square(
            8 / 255, queries=300, n_restarts=2, direction=direction, eot_samples=4
        ).queries_per_image
        assert cell_work(config, direction, TASKS) == Work(forwards=counted + 1)


def test_adversarial_training_counts_its_attack_and_both_weight_steps():
    clean = compose_job(["experiment=study_seeds_smoke", "defense=none"])
    adv = compose_job(["experiment=study_seeds_smoke", "defense=adv_train"])
    assert defense_work(clean, 3) == Work(train_steps=1)
    # the paper's recipe: PGD-10 on the batch, then a clean and an adversarial weight step
    assert defense_work(adv, 3) == Work(forwards=10, backwards=10, train_steps=2)
    only = compose_job(["experiment=study_seeds_smoke", "defense=adv_train_adv_only"])
    assert defense_work(only, 3).train_steps == 1
    # the directions smoke's: PGD-2, one weight step on the mixed clean + adversarial batch (two passes)
    mixed = compose_job(["experiment=study_directions_smoke", "defense=adv_train"])
    assert defense_work(mixed, 3) == Work(forwards=2, backwards=2, train_steps=2)
    assert training_work(adv).train_steps == 2 * training_work(clean).train_steps
    fast = compose_job(["experiment=study_fast_at_smoke", "defense=fgsm_rs"])
    assert defense_work(fast, 3) == Work(forwards=1, backwards=1, train_steps=1)


def test_fixed_costs_of_a_job_are_counted():
    cfg = compose_job(["experiment=study_fast_at_smoke", "defense=fgsm_rs"])
    # 32 val images, 4 epochs validated every 4th: the sanity check (2 batches of 32, capped at 32 images),
    # one validation after epoch 4 and the train job's final one
    assert validation_work(cfg) == Work(forwards=32 + 32 * 2)
    # 4 epochs x 4 batches = 16 steps, a check every 8: 2 checks of 4 images, FGSM + PGD-5 + 3 forwards
    assert co_watch_work(cfg) == Work(forwards=6 + 3, backwards=6) * 8
    # diagnostics: one batch of 32 images, 3 steps: 9 x 3 attack steps, a backward per task, 8 forwards
    assert diagnostics_work(cfg, 3, 32) == Work(forwards=30 + 8, backwards=30) * 32
    plain = compose_job(["experiment=smoke"])
    assert co_watch_work(plain) == Work() and diagnostics_work(plain, 3, 32) == Work()


def test_the_report_sums_jobs_as_ranges():
    jobs = [
        JobPlan(["a=1"], False, 4, None, Work(), Work(), Seconds(60.0, 120.0, 180.0)),
        JobPlan(["a=2"], True, 4, 4, Work(), Work(), Seconds(0.0, 0.0, 0.0)),
    ]
    text = report(jobs, "slurm", models=["a model"])
    assert "2 array tasks: 1 trainings to run (1 cached), 8 cells (4 already in the store)" in text
    # the model work plus the fixed costs: 4.5 s per job and 0.3 s per cell not in the store
    total = 120 + 2 * 4.5 + 4 * 0.3
    assert f"about {total / 60:.2g} min" in text and "model: a model" in text


def test_help_and_unknown_options_do_not_reach_hydra(capsys: pytest.CaptureFixture) -> None:
    from mtl_robust.planning.plan import main

    main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m mtl_robust.plan")
    with pytest.raises(SystemExit, match="unknown option.*--devcie=cuda"):
        main(["--devcie=cuda", "-m", "experiment=study_directions_smoke"])
    with pytest.raises(SystemExit, match="--device=k80: give cpu, cuda, a calibration .json or one of h100"):
        main(["--device=k80", "-m", "experiment=study_directions_smoke"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no GPU to calibrate; name the target GPU"):
            main(["--device=cuda", "-m", "experiment=study_directions_smoke"])
