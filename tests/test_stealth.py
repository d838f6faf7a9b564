"""The stealthy direction (issue #31): raise the targets' relative loss, hold the other tasks within a budget.

Its per-sample LP is solved exactly (certified by its dual) and cross-checked against the CVXPY/HiGHS
reference; as a direction it is a step of the unit box that keeps the held tasks' linearised relative change
within budget / radius; an attack with it stays in its ball and is refused under other norms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_robust.attacks.config import attack_from_config
from mtl_robust.attacks.directions import build_direction
from mtl_robust.attacks.minmax import task_tensor
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.objective import MultiTaskObjective
from mtl_robust.attacks.stealth import solve_stealth, solve_stealth_lp
from mtl_robust.values.direction import DirectionSpec, expand_per_task
from tests.attack_stubs import TreeStub, make_batch, stub_tasks

torch.set_num_threads(1)
RADIUS = 8 / 255


def problem(dim: int, held: int, seed: int, scale: float = 0.3) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(dim)
    a = rng.standard_normal((held, dim)) + 0.5 * g  # held tasks correlated with the targets: stealth binds
    budget = scale * RADIUS * np.abs(a).sum(axis=1).min() if held else 0.1
    return g, a, float(budget)


@pytest.mark.parametrize("held", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("free", [8, 4096])  # the final exact LP on few coordinates, or on all of them
def test_the_fast_solver_meets_the_cvxpy_reference(held: int, seed: int, free: int) -> None:
    g, a, budget = problem(300, held, seed)
    fast = solve_stealth(g, a, budget, RADIUS, free=free)
    _, reference = solve_stealth_lp(g, a, budget, RADIUS)
    assert fast.value == pytest.approx(reference, rel=1e-7)
    assert fast.gap <= 1e-7  # its own dual certificate
    assert np.abs(fast.delta).max() <= RADIUS * (1 + 1e-9)
    assert (np.abs(fast.held) <= budget * (1 + 1e-7) + 1e-12).all()


def test_budget_zero_holds_the_others_still_and_a_loose_budget_is_the_targets_sign_step() -> None:
    g, a, _ = problem(200, 2, 3)
    still = solve_stealth(g, a, 0.0, RADIUS)
    assert np.abs(still.held).max() <= 1e-9 and still.value > 0
    loose = solve_stealth(g, a, 1e9, RADIUS)
    np.testing.assert_allclose(loose.delta, RADIUS * np.sign(g))


def test_stealth_text_forms_and_its_set_is_kept_when_it_is_every_task() -> None:
    assert str(DirectionSpec.parse("stealth:0.05@depth")) == "stealth@depth"  # the default budget left out
    assert str(DirectionSpec.parse("stealth:0.1@depth")) == "stealth:0.1@depth"
    assert build_direction("stealth:0.1@depth").spec() == "stealth:0.1@depth"
    assert [str(s) for s in expand_per_task(["stealth@seg+normal+depth"], ["seg", "normal", "depth"])] == [
        "stealth@seg+normal+depth"
    ]
    with pytest.raises(ValueError, match="needs its target set"):
        build_direction("stealth").tasks_needed(["seg", "depth"])


def test_the_step_keeps_the_held_tasks_linearised_change_within_budget() -> None:
    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = make_batch(n=2, h=5, w=5, seed=5)
    direction = build_direction("stealth:0.02@depth")
    objective = MultiTaskObjective(model, targets, tasks, direction, direction.tasks_needed(list(tasks)))
    with eval_mode(model):
        objective.init_state(x)
        step = direction.step(objective(x, 0).grad)
        x_leaf = x.clone().requires_grad_(True)
        losses = objective.step_losses(x_leaf, 0).ascent
        a, _ = task_tensor(x_leaf, losses, objective.valid)
    assert step.abs().max() <= 1 + 1e-6
    delta = RADIUS * step.flatten(1).double()
    held = torch.einsum("ntd,nd->nt", a, delta)[:, :2]  # seg, normal: held
    assert (held.abs() <= 0.02 * (1 + 1e-4)).all()
    assert (torch.einsum("nd,nd->n", a[:, 2], delta) > 0).all()  # depth rises


def test_an_attack_with_it_stays_in_its_ball_and_other_norms_are_refused() -> None:
    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = make_batch(n=2, h=5, w=5, seed=6)
    attack = attack_from_config({"method": "pgd", "eps": RADIUS, "steps": 2}, "stealth@depth")
    x_adv = attack(model, x, targets, tasks)
    assert (x_adv - x).abs().max() <= RADIUS * (1 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    with pytest.raises(ValueError, match="L-inf box's LP only"):
        attack_from_config({"method": "pgd", "eps": 0.5, "steps": 2, "norm": "l2"}, "stealth@depth")


def test_the_budget_is_posed_over_the_attack_s_own_ball() -> None:
    attack = attack_from_config({"method": "pgd", "eps": 4 / 255, "steps": 2}, "stealth@depth")
    assert attack.direction.radius == pytest.approx(4 / 255)
    alone = build_direction("stealth@depth")
    assert alone.radius == pytest.approx(RADIUS) and alone.within(4 / 255) is not alone
