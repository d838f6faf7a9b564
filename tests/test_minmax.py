"""MINMAX: the exact solver against the CVXPY/HiGHS primal LP (random and degenerate cases), its direction
inside the attacks (ball, pixel range, modes, parameters), and the LP cross-check callback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl_robust.attacks import APGD, FGSM, PGD, MinMax, build_direction, solve_minmax, solve_minmax_lp
from mtl_robust.attacks.minmax import crosscheck_minmax, minmax_problems, relative_gap, task_matrices
from tests.attack_stubs import TreeStub, make_batch, stub_losses, stub_tasks

torch.set_num_threads(1)
GAP = 1e-6


def check_against_lp(a: np.ndarray, s: float) -> None:
    sol = solve_minmax(a, s)
    assert np.all(np.abs(sol.delta) <= s * (1 + 1e-12))
    # float64 round-off of a . delta: terms up to s * max_t ||a_t||_1 cancel (badly scaled tasks)
    roundoff = 1e-13 * s * float(np.abs(a).sum(axis=1).max(initial=0.0)) + 1e-15
    assert sol.value == pytest.approx(float((a @ sol.delta).min()), rel=1e-12, abs=roundoff)
    _, lp_value = solve_minmax_lp(a, s)
    assert relative_gap(sol.value, lp_value, a, s) <= GAP
    assert sol.gap <= GAP  # the solver's own certificate


@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_random_problems_match_the_lp(t):
    rng = np.random.default_rng(t)
    for d in (1, 2, 3, 7, 60):
        for s in (1e-3, 8 / 255, 1.0):
            a = rng.normal(size=(t, d)) * rng.uniform(0.01, 100, size=(t, 1))
            check_against_lp(a, s)


DEGENERATE = {
    # Opposite tasks: the optimum is 0 at delta = 0 (every coordinate a tie).
    "opposite": np.array([[1.0, 2.0, -3.0], [-1.0, -2.0, 3.0]]),
    # Optimum only with a fractional coordinate: delta = (0, s) gives min(s, s) = s; signs give 0.
    "fractional": np.array([[1.0, 1.0], [-1.0, 1.0]]),
    # Duplicated task and a zero-gradient task (its constraint pins the value to 0).
    "duplicate": np.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5], [0.3, 0.1, -0.2]]),
    "zero_task": np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]),
    # Coordinates where every task's gradient vanishes, and exact ties between tasks.
    "zero_coords": np.array([[0.0, 1.0, 0.0, -1.0], [0.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]]),
    "balanced": np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [1.0, 1.0, 0.0]]),
    "all_zero": np.zeros((3, 5)),
    "one_task": np.array([[3.0, -1.0, 0.0]]),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_problems_with_ties_match_the_lp(name):
    check_against_lp(DEGENERATE[name], 0.25)


def test_fractional_case_is_solved_exactly():
    sol = solve_minmax(DEGENERATE["fractional"], 0.5)
    assert sol.value == pytest.approx(0.5)
    assert sol.delta[0] == pytest.approx(0.0, abs=1e-12)  # the tie coordinate is fractional (0), not a sign


def test_image_sized_problem_matches_the_lp():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3 * 24 * 24)) / rng.uniform(0.1, 10, size=(3, 1))
    check = crosscheck_minmax(a, 8 / 255)
    assert check.gap <= GAP


def test_bad_problems_fail_clearly():
    with pytest.raises(ValueError, match="T, D"):
        solve_minmax(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        solve_minmax(np.array([[np.nan, 1.0]]), 1.0)
    with pytest.raises(ValueError, match="step bound"):
        solve_minmax(np.ones((1, 2)), -1.0)


def test_direction_step_is_the_exact_solution_on_a_real_model():
    model = TreeStub()
    x, targets = make_batch(n=2, h=5, w=5)
    attack = FGSM(4 / 255, direction="minmax")
    problems = minmax_problems(attack, model, x, targets, stub_losses())
    x_adv = attack(model, x, targets, stub_losses())
    for n, a in enumerate(problems):
        ideal = solve_minmax(a, 4 / 255)
        step = (x_adv[n] - x[n]).flatten().double().numpy()
        inside = ((x[n] + 4 / 255 < 1) & (x[n] - 4 / 255 > 0)).flatten().numpy()  # pixel range not binding
        assert np.allclose(step[inside], ideal.delta[inside], atol=1e-6)


def test_minmax_raises_the_least_hurt_task_at_least_as_much_as_dgba_to_first_order():
    model = TreeStub()
    x, targets = make_batch(n=3, h=5, w=5, seed=2)
    x0 = x.clone().requires_grad_(True)
    losses = {t: task.loss(model(x0)[t], targets[t]) for t, task in stub_tasks().items()}
    valid = {t: torch.ones(3, dtype=torch.bool) for t in losses}
    for a in task_matrices(x0, losses, valid):
        dgba = np.sign(a.sum(axis=0))  # DGBA: equal weights on grad L_t / L_t
        assert solve_minmax(a, 1.0).value >= (a @ dgba).min() - 1e-9


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["fgsm", "pgd", "apgd"]),
    eps=st.floats(0.0, 1.0),
    seed=st.integers(0, 999),
    saturate=st.booleans(),
)
def test_minmax_attacks_keep_ball_range_modes_and_parameters(method, eps, seed, saturate):
    model = TreeStub()
    model.train()
    model.stem.eval()  # a mixed per-module mode must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, targets = make_batch(n=2, h=4, w=4, seed=seed)
    if saturate:
        x = (x * 3 - 1).clamp(0, 1)
    attack = {
        "fgsm": lambda: FGSM(eps, direction="minmax"),
        "pgd": lambda: PGD(eps, steps=2, direction="minmax"),
        "apgd": lambda: APGD(eps, steps=3, direction="minmax", seed=seed),
    }[method]()
    x_adv = attack(model, x, targets, stub_losses())
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert model.training and not model.stem.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_minmax_is_built_by_name():
    assert isinstance(build_direction("minmax"), MinMax)
    assert build_direction("minmax:1e-6").tau == pytest.approx(1e-6)


def test_lp_check_callback_compares_minmax_with_the_lp():
    from mtl_robust.lightning.lp_crosscheck import LPCrossCheck

    class Module:
        model = TreeStub()
        tasks = stub_tasks()
        logged: dict = {}

        def log(self, name, value, **kwargs):
            self.logged[name] = value

    callback = LPCrossCheck(every_n_batches=1, direction="minmax", eps=4 / 255)
    module = Module()
    callback._check(module, make_batch(n=2, h=4, w=4), 0, "val")
    assert callback.max_gap <= GAP
    assert module.logged["lp/max_gap"] <= GAP


@pytest.mark.parametrize("scales", [(1e-4, 1.0, 1e3), (1e-5, 1.0, 1e4), (1e3, 1e-4, 1.0, 1e-2)])
def test_badly_scaled_tasks_are_solved_to_the_lp(scales):
    rng = np.random.default_rng(len(scales))
    a = rng.normal(size=(len(scales), 600)) * np.array(scales)[:, None]
    check_against_lp(a, 8 / 255)


def test_scales_beyond_the_lp_still_get_a_certified_step_at_least_as_good():
    # Tasks 1e12 apart: the optimum lies below the value floor, where a gap relative to it means little.
    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 600)) * np.array([1e-6, 1.0, 1e6])[:, None]
    sol = solve_minmax(a, 8 / 255)
    assert sol.gap <= GAP and sol.upper_bound >= sol.value > 0
    assert sol.value >= solve_minmax_lp(a, 8 / 255)[1] * (1 - 1e-9)


def test_a_batch_with_left_out_tasks_matches_each_sample_alone():
    from mtl_robust.attacks.minmax_solver import solve_minmax_batch

    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.normal(size=(4, 3, 50)) * rng.uniform(0.01, 10, size=(4, 3, 1)))
    valid = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    batch = solve_minmax_batch(a, 0.1, valid)
    assert batch.gap.max() <= GAP
    assert torch.equal(batch.delta[2], torch.zeros(50, dtype=torch.float64))  # no valid task: no step
    for n in (0, 1, 3):
        alone = solve_minmax(a[n][valid[n]].numpy(), 0.1)
        assert float(batch.value[n]) == pytest.approx(alone.value, rel=1e-9, abs=1e-15)
        assert (
            relative_gap(
                float(batch.value[n]), solve_minmax_lp(a[n][valid[n]].numpy(), 0.1)[1], a[n].numpy(), 0.1
            )
            <= GAP
        )
