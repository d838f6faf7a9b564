"""APGD: checkpoint schedules, hand-traced step-size control, best iterate, restarts, per-sample logic."""

from __future__ import annotations

import pytest
import torch

from mtl_robust.attacks import (
    APGD,
    MultiTaskObjective,
    build_direction,
    paper_checkpoints,
    reference_checkpoints,
)
from tests.attack_stubs import LinearToy, TreeStub, make_batch, mean_loss, stub_losses

torch.set_num_threads(1)
EPS = 8 / 255


def test_reference_checkpoints():
    assert reference_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert reference_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert reference_checkpoints(1) == [1]


def test_paper_checkpoints_exact_arithmetic():
    assert paper_checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert paper_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert paper_checkpoints(8) == [2, 4, 5, 6, 7, 8]


def test_reference_hand_trace_on_linear_objective():
    # f = mean(x), gradient sign +1. x0 = 0.5, eps = 0.125, step 2 eps: step 1 hits the ball (f up), step 2
    # cannot move (no increase). Check at 2: 1 counted increase (the first step) <= 0.75 * 2 -> halve; every
    # later 1-step window has no increase -> halve again.
    x = torch.full((2, 1, 2, 2), 0.5)
    result = APGD(0.125, steps=10, random_start=False).run(
        LinearToy(), x, {"a": x}, {"a": mean_loss}, record=True
    )
    sizes = [r.step_size for r in result.history]
    expected = [0.25, 0.25] + [0.25 / 2 ** (w - 1) for w in range(2, 10)] + [None]
    assert sizes[:-1] == pytest.approx(expected[:-1]) and sizes[-1] is None
    torch.testing.assert_close(result.x_adv, x + 0.125)


def test_paper_variant_hand_trace():
    # eta = eps / K = 1/64 (exact in binary). From x0 = 1 - 3/64 the pixel bound stops the ascent after 3
    # steps. Checkpoints for K = 8: 2, 4, 5, 6, 7, 8. At 2: both steps increased -> keep. At 4: 1 of 2 < 1.5
    # -> halve; at 5, 6, 7 no increase -> halve; 8 = K is not checked.
    eps = 0.125
    x = torch.full((1, 1, 2, 2), 1 - 3 / 64)
    attack = APGD.paper(eps, steps=8)
    assert attack.first_step_size == 1 / 64 and attack.random_start is False and attack.n_restarts == 1
    result = attack.run(LinearToy(), x, {"a": x}, {"a": mean_loss}, record=True)
    sizes = [r.step_size for r in result.history]
    assert sizes == [1 / 64] * 4 + [1 / 128, 1 / 256, 1 / 512, 1 / 1024, None]
    assert torch.equal(result.x_adv, torch.ones_like(x))


def test_paper_variant_without_obstacle_is_pgd():
    # Momentum 0.75 of a constant step keeps the step: x_k = x0 + k eps/K, every step increases f, no halving.
    x = torch.full((1, 1, 2, 2), 0.25)
    result = APGD.paper(0.125, steps=10).run(LinearToy(), x, {"a": x}, {"a": mean_loss}, record=True)
    assert all(r.step_size == pytest.approx(0.0125) for r in result.history[:-1])
    torch.testing.assert_close(result.x_adv, x + 0.125)


def _objective_at(model, x, targets, direction):
    d = build_direction(direction)
    obj = MultiTaskObjective(model, targets, stub_losses(), d, d.tasks_needed(list(targets)))
    model.eval()
    obj.init_state(x)
    return obj


@pytest.mark.parametrize(
    "attack",
    [
        APGD(EPS, steps=10, direction="dgba"),
        APGD(EPS, steps=10, direction="total", random_start=False),
        APGD(EPS, steps=6, n_restarts=3, direction="dgba", seed=1),
        APGD.paper(EPS, steps=10, direction="dgba"),
        APGD.paper(EPS, steps=10, direction="sign_sum", revised=True),
    ],
    ids=repr,
)
def test_returns_best_iterate(attack):
    model, (x, targets) = TreeStub(), make_batch(n=3)
    result = attack.run(model, x, targets, stub_losses(), record=True)
    assert len(result.history) == attack.n_restarts * (attack.steps + 1)
    assert {r.restart for r in result.history} == set(range(attack.n_restarts))
    recorded = torch.stack([r.objective for r in result.history])
    final = _objective_at(model, x, targets, attack.direction.spec())(
        result.x_adv, 0, need_grad=False
    ).objective
    best = recorded.max(dim=0).values
    torch.testing.assert_close(final, best, rtol=1e-5, atol=1e-6)
    assert (final >= recorded - 1e-5).all()
    assert (result.x_adv - x).abs().max() <= EPS + 1e-6


@pytest.fixture
def one_thread():
    # A batch of 3 and a batch of 1 reduce in another order on several threads; a gradient coordinate near 0
    # can then flip its sign. One thread makes both exact, so the test sees only the bookkeeping.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bookkeeping_is_per_sample(one_thread):
    # A batch gives each sample exactly what it gets alone (step halving, best tracking, restarts).
    model, (x, targets) = TreeStub(), make_batch(n=3, seed=5)
    attack = APGD(EPS, steps=10, random_start=False, direction="dgba")
    batch = attack.run(model, x, targets, stub_losses(), record=True)
    sizes = torch.stack([r.step_sizes for r in batch.history[:-1]])
    assert not all(torch.equal(sizes[:, 0], sizes[:, b]) for b in range(3)), "expected different schedules"
    for b in range(3):
        alone = attack(model, x[b : b + 1], {k: v[b : b + 1] for k, v in targets.items()}, stub_losses())
        torch.testing.assert_close(alone, batch.x_adv[b : b + 1], rtol=0, atol=1e-6)


def test_reference_random_start_puts_each_sample_on_the_ball_boundary():
    attack = APGD(EPS, seed=3)
    assert attack.random_start is True and attack.first_step_size == pytest.approx(2 * EPS)
    x0 = torch.full((3, 3, 4, 4), 0.5)
    start = attack._start(x0, torch.Generator().manual_seed(0))
    dist = (start - x0).abs().flatten(1)
    assert (dist <= EPS + 1e-7).all()
    torch.testing.assert_close(dist.max(dim=1).values, torch.full((3,), EPS))
    assert (dist.mean(dim=1) < 0.8 * EPS).all()  # uniform inside, not all on the boundary


# ------------------------------------------------------------------------- step-dependent attack losses
def test_a_step_dependent_loss_shapes_the_ascent_but_not_the_judged_objective():
    """SegPGD's weight moves with the step index: the ascent direction changes with it, the objective APGD
    judges iterates by (SegPGD's plain CE) does not."""
    model, (x, targets) = TreeStub(), make_batch(n=2, h=6, w=6)
    attack = APGD(EPS, steps=10, attack_losses={"seg": "segpgd"})
    objective = attack.bind(model.eval(), x, targets, stub_losses())
    first, later = objective(x, 0), objective(x, 9)
    torch.testing.assert_close(first.objective, later.objective, atol=0, rtol=0)
    assert not torch.equal(first.grad, later.grad)


def test_apgd_with_segpgd_returns_the_iterate_it_judged_best():
    """The returned point scores (re-evaluated from scratch) the best objective the history recorded, and
    the step size adapts as it does for a step-independent loss."""
    model, (x, targets) = TreeStub(), make_batch(n=4, h=8, w=8, seed=2)
    attack = APGD(EPS, steps=10, attack_losses={"seg": "segpgd"}, seed=0)
    result = attack.run(model, x, targets, stub_losses(), record=True)
    recorded = torch.stack([r.objective for r in result.history]).amax(dim=0)
    rescored = attack.score(model, x, targets, stub_losses(), result.x_adv)
    torch.testing.assert_close(rescored, recorded, atol=1e-5, rtol=1e-5)


def test_a_step_dependent_loss_without_a_judged_form_is_refused():
    class Scheduled:
        step_aware = True

        def __call__(self, pred, target, *, step, total_steps):
            return pred.flatten(1).mean(1) * step

    with pytest.raises(TypeError, match="no judge"):
        APGD(EPS, attack_losses={"seg": Scheduled()})
