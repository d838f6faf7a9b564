"""Target sets (issue #31): a joint direction computed over a subset of the tasks, written `dgba@seg+depth`.

The direction over {a, b} must be the direction of a model that only has a and b (its other tasks are never
forwarded during the attack); its text form round-trips and leaves every old text unchanged; and an attack
restricted to a set stays in its ball and the pixel range under every norm.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mtl_robust.attacks.config import attack_from_config, direction_spec
from mtl_robust.attacks.directions import build_direction
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.norms import norms_of
from mtl_robust.attacks.objective import MultiTaskObjective
from mtl_robust.jobs.pipeline import attack_list
from mtl_robust.values.direction import DirectionSpec, expand_per_task
from mtl_robust.values.norm import Norm
from tests.attack_stubs import TreeStub, make_batch, stub_tasks
from tests.conftest import compose_config

torch.set_num_threads(1)

JOINT = ("total", "dgba", "static_relative", "minmax", "sign_sum")
OLD_TEXTS = (
    "total",
    "dgba",
    "dgba:1e-06",
    "single:seg",
    "single:depth",
    "minmax",
    "sign_sum",
    "static_relative",
)
NORM_EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 2.0}


def step_of(direction, tasks: dict, model, x, targets) -> torch.Tensor:
    objective = MultiTaskObjective(model, targets, tasks, direction, direction.tasks_needed(list(tasks)))
    with eval_mode(model):
        objective.init_state(x)
        return direction.step(objective(x, 0).grad)


@pytest.mark.parametrize("text", OLD_TEXTS)
def test_old_direction_texts_are_unchanged(text: str) -> None:
    spec = DirectionSpec.parse(text)
    assert str(spec) == text and spec.targets is None
    assert build_direction(text).spec() == text


@pytest.mark.parametrize(
    ("given", "text"),
    [
        ("dgba@depth+seg", "dgba@seg+depth"),
        ("dgba:1e-6@seg", "dgba:1e-06@seg"),
        ("minmax@normal+seg+normal", "minmax@seg+normal"),
        ("total@depth", "total@depth"),
    ],
)
def test_target_set_text_round_trips_in_task_order(given: str, text: str) -> None:
    spec = DirectionSpec.parse(given)
    assert str(spec) == text and DirectionSpec.parse(text) == spec
    assert build_direction(given).spec() == text
    assert (
        DirectionSpec.from_config({"name": spec.name, "tasks": list(spec.targets), "tau": spec.arg}) == spec
    )


def test_a_set_equal_to_all_tasks_keeps_todays_text_and_unknown_tasks_are_refused() -> None:
    tasks = ["seg", "normal", "depth"]
    assert [str(s) for s in expand_per_task(["dgba@depth+seg+normal", "total@seg", "single"], tasks)] == [
        "dgba",
        "total@seg",
        "single:seg",
        "single:normal",
        "single:depth",
    ]
    with pytest.raises(ValueError, match="unknown target task"):
        expand_per_task(["dgba@seg+edges"], tasks)
    with pytest.raises(ValueError, match="unknown target task"):
        build_direction("dgba@seg+edges").tasks_needed(tasks)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("single:seg@seg", "attacks one task"),
        ({"name": "single", "task": "seg", "tasks": ["seg"]}, "attacks one task"),
        ("dgba@", "empty target set"),
        ({"name": "dgba", "tasks": []}, "at least one task"),
        ("dgba@seg+", "no task name"),
    ],
)
def test_bad_target_sets_are_refused_clearly(bad, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        DirectionSpec.parse(bad)


@pytest.mark.parametrize("norm", sorted(NORM_EPS))
@pytest.mark.parametrize("name", JOINT)
def test_the_direction_over_a_set_is_the_direction_of_a_model_with_only_those_tasks(
    name: str, norm: str
) -> None:
    if name == "sign_sum" and norm != "linf":
        pytest.skip("sign_sum is a step of the L-inf box only")
    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = make_batch(n=2, h=5, w=5, seed=3)
    geometry = Norm.parse(norm)
    restricted = build_direction(f"{name}@seg+depth").for_norm(geometry)
    plain = build_direction(name).for_norm(geometry)
    only = {t: tasks[t] for t in ("seg", "depth")}
    model.calls.clear()
    got = step_of(restricted, tasks, model, x, targets)
    assert all(set(call) <= {"seg", "depth"} for call in model.calls)  # normal is never forwarded
    torch.testing.assert_close(got, step_of(plain, only, model, x, targets), atol=0, rtol=0)
    assert not torch.equal(got, step_of(plain, tasks, model, x, targets))  # the set changes the step


@pytest.mark.parametrize("norm", sorted(NORM_EPS))
@pytest.mark.parametrize("method", ["pgd", "apgd"])
def test_an_attack_on_a_set_stays_in_its_ball_and_the_pixel_range(method: str, norm: str) -> None:
    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = make_batch(n=2, h=5, w=5, seed=4)
    eps = NORM_EPS[norm]
    attack = attack_from_config({"method": method, "eps": eps, "steps": 3, "norm": norm}, "dgba@normal+depth")
    x_adv = attack(model, x, targets, tasks)
    assert (norms_of(x_adv - x, Norm.parse(norm)) <= eps * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_hydra_sweeps_target_sets_from_the_command_line(tmp_path) -> None:
    cfg = compose_config("attack", ["direction=dgba", "+direction.tasks=[depth,seg]"], tmp_path)
    assert str(direction_spec(OmegaConf.to_container(cfg.direction, resolve=True))) == "dgba@seg+depth"
    cfg = compose_config("attack", ["direction=single", "+direction.tasks=[seg]"], tmp_path)
    with pytest.raises(ValueError, match="attacks one task"):
        direction_spec(OmegaConf.to_container(cfg.direction, resolve=True))
    # A study lists sets in its directions, as text forms (no quoting needed for '@' and '+').
    cfg = compose_config(
        "pipeline", ["pipeline.directions=[dgba@seg+depth,total@depth,dgba@seg+normal+depth]"], tmp_path
    )
    cells = attack_list(cfg, ["seg", "normal", "depth"])
    assert sorted({d for _, d in cells}) == ["dgba", "dgba@seg+depth", "total@depth"]


def test_hydra_multirun_parses_a_sweep_over_sets() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides(["+direction.tasks=[seg,depth],[seg]"])
    assert [list(v) for v in override.sweep_iterator()] == [["seg", "depth"], ["seg"]]
    (override,) = OverridesParser.create().parse_overrides(["pipeline.directions=[dgba@seg+depth,total]"])
    assert override.value() == ["dgba@seg+depth", "total"]


def test_the_planner_counts_a_set_s_backwards_and_stealth_s_held_tasks() -> None:
    from mtl_robust.planning.cost import Work, cell_work

    tasks = ["seg", "normal", "depth"]
    pgd = {"method": "pgd", "steps": 4, "eps": 8 / 255}
    # MINMAX over two tasks: a clean forward for its state, then per step one forward and two backwards
    assert cell_work(pgd, "minmax@seg+depth", tasks) == Work(forwards=6, backwards=8)
    assert cell_work(pgd, "minmax", tasks) == Work(forwards=6, backwards=12)
    assert cell_work(pgd, "dgba@seg+depth", tasks) == Work(forwards=5, backwards=4)  # one backward of f
    # STEALTH reads every task's gradient (the held ones are its constraints), and a clean state
    assert cell_work(pgd, "stealth@depth", tasks) == Work(forwards=6, backwards=12)


def test_a_single_jobs_full_target_set_is_the_direction_over_all_tasks() -> None:
    from mtl_robust.attacks.config import attack_spec

    tasks = ["seg", "normal", "depth"]
    full = attack_spec({"method": "pgd", "eps": 8 / 255, "steps": 1}, {"name": "dgba", "tasks": tasks})
    plain = attack_spec({"method": "pgd", "eps": 8 / 255, "steps": 1}, "dgba")
    assert str(full.direction) == "dgba@seg+normal+depth"
    assert full.over(tasks) == plain.over(tasks) and full.over(tasks).row_config() == plain.row_config()
    part = attack_spec({"method": "pgd", "eps": 8 / 255, "steps": 1}, {"name": "dgba", "tasks": ["depth"]})
    assert part.over(tasks) is part
    with pytest.raises(ValueError, match="unknown target"):
        part.over(["seg", "normal"])
