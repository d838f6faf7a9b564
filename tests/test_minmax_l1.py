"""MINMAX under L1: the column-generation game (`attacks.minmax_l1`) is the LP's optimum over the L1 step
set, against the CVXPY reference with HiGHS, and the direction and the LP cross-check use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_robust.attacks import PGD, build_direction, minmax_l1
from mtl_robust.attacks.minmax_l1 import (
    solve_minmax_l1_batch,
    solve_minmax_l1_lp,
    support_value,
    top_k_vertex,
)
from mtl_robust.attacks.norms import norms_of, step_count
from mtl_robust.values.norm import L1, Norm
from tests.test_lp import _loader, _Module, _trainer


def _problems(seed: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for trial in range(24):
        t, d = int(rng.integers(2, 6)), int(rng.integers(40, 300))
        k = [1, 2, max(1, d // 5), d][trial % 4]
        a = rng.standard_normal((t, d)) * rng.uniform(0.01, 10.0, size=(t, 1)) + 0.3 * rng.standard_normal(d)
        out.append((a, k))
    return out


@pytest.mark.parametrize("path", ["band LP", "column generation"])
def test_the_game_reaches_the_lp_optimum_over_the_l1_step_set(path: str, monkeypatch) -> None:
    if path == "column generation":  # a band too narrow to certify: the cutting planes must close the gap
        monkeypatch.setattr(minmax_l1, "POLISH_WINDOW", 1)
        monkeypatch.setattr(minmax_l1, "POLISH_SHARE", 0.0)
    worst, rounds = 0.0, 0
    for a, k in _problems(0):
        sol = solve_minmax_l1_batch(torch.from_numpy(a)[None], k)
        rounds += sol.rounds
        _, reference = solve_minmax_l1_lp(a, k)
        ours = float(sol.value[0])
        worst = max(worst, abs(ours - reference) / max(abs(reference), 1e-12))
        delta = sol.delta[0]
        assert float(delta.abs().sum()) <= 1 + 1e-9 and float(delta.abs().max()) <= 1 / k + 1e-12
        assert float(sol.gap[0]) < 1e-8  # its own certificate: the weights' bound meets the step's value
        assert ours == pytest.approx(float((torch.from_numpy(a) @ delta).min()), rel=1e-12)
    assert worst < 1e-8
    assert (rounds > 0) == (path == "column generation")  # the band LP certifies these at once


def test_invalid_tasks_are_left_out_and_opposed_tasks_give_no_step() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3, 120))
    a[1, 2] = 1e6  # an invalid task of the second sample: whatever it holds, it is left out
    valid = torch.tensor([[True, True, True], [True, True, False]])
    sol = solve_minmax_l1_batch(torch.from_numpy(a), 24, valid)
    for n, tasks in ((0, [0, 1, 2]), (1, [0, 1])):
        _, reference = solve_minmax_l1_lp(a[n, tasks], 24)
        assert float(sol.value[n]) == pytest.approx(reference, rel=1e-8)
    opposed = np.stack([a[0, 0], -a[0, 0]])[None]
    sol = solve_minmax_l1_batch(torch.from_numpy(opposed), 24)
    assert float(sol.value[0]) == 0.0 and not sol.delta.any()
    nothing = solve_minmax_l1_batch(torch.from_numpy(a), 24, torch.zeros(2, 3, dtype=torch.bool))
    assert not nothing.delta.any() and not nothing.value.any()


def test_the_oracle_vertex_takes_exactly_k_coordinates_even_with_ties() -> None:
    r = torch.tensor([[3.0, 1.0, -1.0, 0.5], [2.0, -2.0, 2.0, 2.0]], dtype=torch.float64)
    vertex = top_k_vertex(r, 2)
    assert (vertex != 0).sum(dim=1).tolist() == [2, 2]
    assert torch.equal((r * vertex).sum(dim=1) / 2, support_value(r, 2))  # (3 + 1) / 2 and (2 + 2) / 2
    assert support_value(r, 2).tolist() == [2.0, 2.0]


def test_minmax_under_l1_attacks_with_its_game_step() -> None:
    from tests.attack_stubs import TreeStub, make_batch, stub_tasks

    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = make_batch(n=2, h=8, w=8)
    direction = build_direction("minmax").for_norm(L1)
    assert "norm=l1" in repr(direction)
    attack = PGD(2.0, steps=3, alpha=1.0, direction="minmax", norm="l1")
    x_adv = attack(model, x, targets, tasks)
    assert (norms_of(x_adv - x, L1) <= 2.0 * (1 + 1e-6)).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (attack.score(model, x, targets, tasks, x_adv) > attack.score(model, x, targets, tasks, x)).all()
    assert step_count(Norm("l1", 0.05), 192) == 10


def test_the_lp_check_callback_cross_checks_minmax_under_l1() -> None:
    from mtl_robust.lightning.lp_crosscheck import LPCrossCheck

    callback = LPCrossCheck(every_n_batches=1, max_coords=60, direction="minmax", eps=2.0, norm="l1")
    metrics = _trainer(callback).validate(_Module(), dataloaders=_loader(), verbose=False)[0]
    assert metrics["lp/max_gap"] <= 1e-6 and len(callback.results) == 2
    assert all(r.n_coords == 60 and r.lp_objective > 0 for r in callback.results)


def test_the_first_guess_is_the_min_norm_point_of_the_task_hull() -> None:
    from mtl_robust.attacks.minmax_l2 import min_norm_weights, solve_minmax_l2_batch

    a = torch.from_numpy(np.random.default_rng(7).normal(size=(4, 3, 200)) + 0.2)
    valid = torch.tensor([[True, True, True], [True, False, True], [True, True, True], [False, True, True]])
    torch.testing.assert_close(
        min_norm_weights(a, valid), solve_minmax_l2_batch(a, valid).weights, atol=1e-6, rtol=0
    )
