"""Square attack: the schedule, queries counted as the model sees them, no gradient anywhere (no_grad, a
non-differentiable model), per-sample acceptance and independence, restarts, and the row's query count.
The shared invariants (modes, parameters, buffers, ball, pixel range, seeds, bad input) are in
test_attacks.py, test_attack_properties.py and test_combinations.py."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mtl_robust.attacks import Square, build_attack
from mtl_robust.attacks.square import p_fraction, square_side
from tests.attack_stubs import TreeStub, make_batch, stub_losses

torch.set_num_threads(1)
EPS = 8 / 255


class Counting(nn.Module):
    """Counts the images each forward sees; refuses to run with autograd on or on a tensor needing grad."""

    tasks = TreeStub.tasks

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.images = 0

    def forward(self, x: Tensor, tasks=None) -> dict[str, Tensor]:
        assert not torch.is_grad_enabled() and not x.requires_grad, "square must never build a graph"
        self.images += x.shape[0]
        return self.inner(x, tasks=tasks)


class NumpyRounded(nn.Module):
    """A forward through NumPy and rounding: not differentiable at all (autograd cannot even see it)."""

    tasks = TreeStub.tasks

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, tasks=None) -> dict[str, Tensor]:
        rounded = torch.from_numpy((x.detach().cpu().numpy() * 16).round() / 16).to(x)
        return self.inner(rounded, tasks=tasks)


def test_schedule_is_the_original_rescaled_to_the_budget():
    # 10000 queries: the original breakpoints; 100 queries: the same shape, 100x earlier.
    assert [p_fraction(q, 10000, 0.8) for q in (0, 10, 11, 50, 51, 8000, 8001, 9999)] == pytest.approx(
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512, 0.8 / 512]
    )
    assert [p_fraction(q, 100, 0.8) for q in (0, 1, 3, 80, 81)] == pytest.approx(
        [0.8, 0.8 / 4, 0.8 / 8, 0.8 / 256, 0.8 / 512]
    )
    assert square_side(0.25, 32, 32) == 16 and square_side(0.8, 32, 32) == 29
    # at most the shorter side (auto-attack's rule; a non-square image can get a full-height square), >= 1
    assert square_side(1.0, 8, 6) == 6 and square_side(0.8, 16, 64) == 16 and square_side(1e-6, 32, 32) == 1


@pytest.mark.parametrize(
    ("direction", "clean_forward", "eot"),
    [("dgba", 0, 1), ("minmax", 1, 1), ("single:seg", 0, 1), ("minmax", 1, 3)],
)
def test_queries_are_counted_as_the_model_sees_them(direction, clean_forward, eot):
    model, (x, targets) = Counting(TreeStub()), make_batch(n=3)
    attack = build_attack("square", eps=EPS, queries=7, n_restarts=2, direction=direction, eot_samples=eot)
    result = attack.run(model, x, targets, stub_losses())
    assert result.queries.tolist() == [(2 * 7 + clean_forward) * eot] * 3 == [attack.queries_per_image] * 3
    assert model.images == 3 * attack.queries_per_image


def test_needs_no_gradient_and_attacks_a_non_differentiable_model():
    model, (x, targets) = NumpyRounded(TreeStub()), make_batch(n=2, h=8, w=8)
    attack = Square(EPS * 4, queries=40, direction="total")
    with torch.no_grad():
        x_adv = attack(model, x, targets, stub_losses())
    before = attack.score(model, x, targets, stub_losses(), x)
    after = attack.score(model, x, targets, stub_losses(), x_adv)
    assert (after > before).all()  # a gradient attack sees zero gradients through this model and stays put
    assert (x_adv - x).abs().max() <= 4 * EPS + 1e-6


def test_accepts_only_improvements_per_sample():
    model, (x, targets) = TreeStub(), make_batch(n=3, h=8, w=8)
    result = Square(EPS, queries=30, direction="dgba").run(model, x, targets, stub_losses(), record=True)
    objectives = torch.stack([r.objective for r in result.history])  # the accepted point after each query
    assert (objectives[1:] >= objectives[:-1]).all()
    assert (objectives[-1] > objectives[0]).any()
    assert all(set(r.task_losses) == {"seg", "normal", "depth"} for r in result.history)
    # Every accepted coordinate sits on the ball's boundary, or at a pixel bound.
    gap = (result.x_adv - x).abs()
    at_bound = (result.x_adv == 0) | (result.x_adv == 1)
    assert ((gap - EPS).abs() < 1e-6).logical_or(at_bound).all()


def test_a_sample_does_not_depend_on_the_rest_of_the_batch():
    model, (x, targets) = TreeStub(), make_batch(n=3, h=8, w=8, seed=2)
    other_x, other_targets = make_batch(n=3, h=8, w=8, seed=9)
    mixed_x = torch.cat([x[:1], other_x[1:]])
    mixed_targets = {t: torch.cat([v[:1], other_targets[t][1:]]) for t, v in targets.items()}
    attack = Square(EPS, queries=25, direction="dgba")
    a = attack(model, x, targets, stub_losses())
    b = attack(model, mixed_x, mixed_targets, stub_losses())
    torch.testing.assert_close(a[:1], b[:1], rtol=0, atol=0)


def test_restarts_keep_the_per_sample_best():
    model, (x, targets) = TreeStub(), make_batch(n=4, h=8, w=8)
    one = Square(EPS, queries=10, seed=0, direction="total")
    two = Square(EPS, queries=10, n_restarts=2, seed=0, direction="total")
    f_one = one.score(model, x, targets, stub_losses(), one(model, x, targets, stub_losses()))
    f_two = two.score(model, x, targets, stub_losses(), two(model, x, targets, stub_losses()))
    assert (f_two >= f_one - 1e-6).all()  # the first restart is the one-restart run; the best is kept


def test_the_evaluation_cell_records_queries_per_image():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    cell = build_attack("square", pixel_eps=8, queries=5, direction="minmax").with_losses(stub_losses())
    cell(model, x, targets)
    cell(model, x[:1], {t: v[:1] for t, v in targets.items()})
    assert cell.row_results() == {"queries_per_image": 6.0}
    assert cell.row_results() == {"queries_per_image": 0.0}  # counts start afresh for the next row


def test_square_has_no_gradient_step_to_cross_check():
    model, (x, targets) = TreeStub(), make_batch(n=1)
    with pytest.raises(ValueError, match="no gradient step"):
        Square(EPS, queries=2).linear_objective(model, x, targets, stub_losses())
    with pytest.raises(ValueError, match=r"images \[N, C, H, W\]"):
        Square(EPS, queries=2)(model, x[:, 0], targets, stub_losses())


def test_an_ensemble_row_records_its_square_members_queries():
    from mtl_robust.evaluation.ensemble_cell import ensemble_cell
    from mtl_robust.evaluation.passes import run_pass
    from mtl_robust.tasks import build_tasks
    from tests.attack_stubs import SEG_CLASSES

    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)
    members = {"pgd": {"method": "pgd", "steps": 1}, "sq": {"method": "square", "queries": 4}}
    cell = ensemble_cell({"method": "ensemble", "eps": EPS, "members": members}, tasks)
    model, (x, targets) = TreeStub(), make_batch(n=2)
    cell.attack(model, x, targets)
    clean = run_pass(model, tasks, [(x, targets)], progress=False)
    members_row = cell.attack.row_results(clean)["ensemble"]["members"]
    assert members_row["sq"]["queries_per_image"] == 4.0 and "queries_per_image" not in members_row["pgd"]
