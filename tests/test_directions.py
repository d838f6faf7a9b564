"""Directions: DGBA's one-backward form equals the paper code's per-task form; guards; other directions."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from mtl_robust.attacks import (
    DGBA,
    PGD,
    DGBAReference,
    MinMax,
    MultiTaskObjective,
    SignSum,
    Single,
    StaticRelative,
    Total,
    build_direction,
    dgba_reference_gradient,
)
from mtl_robust.models import build_model
from mtl_robust.tasks import build_task
from tests.attack_stubs import TreeStub, make_batch, stub_losses, stub_tasks

torch.set_num_threads(1)
TASKS = ["seg", "normal", "depth"]


def _objective(model, targets, direction, tasks=TASKS):
    return MultiTaskObjective(model, targets, stub_losses(), direction, direction.tasks_needed(tasks))


def _eval(model, x, targets, direction):
    model.eval()
    obj = _objective(model, targets, direction)
    obj.init_state(x)
    return obj(x, 0)


def _per_task_grads(model, x, targets):
    """Input gradient of each task's per-sample loss sum (rows = samples), computed independently."""
    model.eval()
    out = {}
    for name, task in stub_tasks().items():
        xg = x.clone().requires_grad_(True)
        loss = task.loss(model(xg, tasks=[name])[name], targets[name])
        (out[name],) = torch.autograd.grad(loss.sum(), xg)
        out[name + "_loss"] = loss.detach()
    return out


def test_dgba_one_backward_equals_batch_size_times_per_task_reference():
    model, (x, targets) = TreeStub(), make_batch(n=4, h=7, w=5)
    one = _eval(model, x, targets, DGBA()).grad
    ref = _eval(model, x, targets, DGBAReference()).grad
    n = x.shape[0]
    scale = ref.abs().max()
    assert scale > 0
    torch.testing.assert_close(one, n * ref, rtol=1e-4, atol=1e-6 * float(n * scale))
    for b in range(n):
        significant = ref[b].abs() > 1e-3 * ref[b].abs().max()
        assert significant.sum() > 0.5 * significant.numel()
        assert torch.equal(one[b][significant].sign(), ref[b][significant].sign())


def test_dgba_direction_is_sum_of_task_gradients_over_task_losses_per_sample():
    model, (x, targets) = TreeStub(seed=3), make_batch(n=3, seed=4)
    g = _per_task_grads(model, x, targets)
    expected = sum(g[t] / g[t + "_loss"].view(-1, 1, 1, 1) for t in TASKS)
    ev = _eval(model, x, targets, DGBA())
    torch.testing.assert_close(ev.grad, expected, rtol=1e-4, atol=1e-7)
    logs = sum(torch.log(g[t + "_loss"]) for t in TASKS)
    torch.testing.assert_close(ev.objective, logs)


def test_dgba_empty_mask_contributes_nothing_and_no_nan():
    model, (x, targets) = TreeStub(), make_batch(n=3, seed=1)
    targets["seg"][1] = 255  # sample 1 has no valid seg pixel
    targets["depth"][2] = 0.0  # sample 2 has no valid depth pixel
    ev = _eval(model, x, targets, DGBA())
    assert torch.isfinite(ev.grad).all() and torch.isfinite(ev.objective).all()
    g = _per_task_grads(model, x, targets)
    for b, missing in ((1, "seg"), (2, "depth")):
        kept = [t for t in TASKS if t != missing]
        expected = sum(g[t][b] / g[t + "_loss"][b] for t in kept)
        torch.testing.assert_close(ev.grad[b], expected, rtol=1e-4, atol=1e-7)
        assert ev.objective[b].item() == pytest.approx(
            sum(math.log(g[t + "_loss"][b]) for t in kept), rel=1e-5
        )
    # Every direction survives a sample without any valid pixel at all.
    targets["seg"][0], targets["normal"][0], targets["depth"][0] = 255, 0.0, 0.0
    for direction in (DGBA(), DGBAReference(), Total(), SignSum(), StaticRelative()):
        ev = _eval(model, x, targets, direction)
        assert torch.isfinite(ev.grad).all() and torch.isfinite(ev.objective).all()
        assert torch.count_nonzero(ev.grad[0]) == 0, direction
        assert ev.objective[0] == 0


def test_dgba_floor_tau_keeps_zero_losses_finite():
    losses = {"a": torch.tensor([0.0, 1e-12, 2.0]), "b": torch.tensor([1.0, 1.0, 1.0])}
    valid = {"a": torch.tensor([True, True, True]), "b": torch.tensor([True, True, False])}
    f = DGBA(tau=1e-8).objective(losses, valid, None)
    expected = torch.tensor([math.log(1e-8), math.log(1e-8), math.log(2.0)])
    torch.testing.assert_close(f, expected)
    x = torch.ones(3, 1, requires_grad=True)
    lossy = {"a": torch.tensor([0.0, 0.5, 2.0]) * x[:, 0], "b": torch.ones(3) * x[:, 0]}
    (grad,) = torch.autograd.grad(DGBA().objective(lossy, valid, None).sum(), x)
    # d/dx log(x * l) = 1/x per task; the floored pair (loss 0) and the invalid pair (b, sample 2) give 0.
    torch.testing.assert_close(grad[:, 0], torch.tensor([1.0, 2.0, 1.0]))
    lossy = {"a": torch.tensor([0.0, 0.5, 2.0]) * x[:, 0], "b": torch.ones(3) * x[:, 0]}
    ref = dgba_reference_gradient(x, lossy, valid)
    torch.testing.assert_close(ref[:, 0], torch.tensor([1.0, 2.0, 1.0]) / 3)  # batch-mean backward: 1/N


def test_single_only_runs_its_task_and_matches_task_gradient():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    model.calls.clear()
    ev = _eval(model, x, targets, Single("normal"))
    assert model.calls == [("normal",)]
    g = _per_task_grads(model, x, targets)
    torch.testing.assert_close(ev.grad, g["normal"])
    model.calls.clear()
    PGD(0.03, steps=3, direction="single:depth")(model, x, targets, stub_losses())
    assert set(model.calls) == {("depth",)}


def test_total_sums_per_sample_losses():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    g = _per_task_grads(model, x, targets)
    ev = _eval(model, x, targets, Total())
    torch.testing.assert_close(ev.grad, sum(g[t] for t in TASKS), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ev.objective, sum(g[t + "_loss"] for t in TASKS))


def test_sign_sum_is_vote_of_task_signs():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    g = _per_task_grads(model, x, targets)
    ev = _eval(model, x, targets, SignSum())
    torch.testing.assert_close(ev.grad, sum(g[t].sign() for t in TASKS))
    assert set(ev.grad.unique().tolist()) <= {-3.0, -1.0, 1.0, 3.0}
    torch.testing.assert_close(ev.objective, sum(g[t + "_loss"] for t in TASKS))


def test_static_relative_weights_are_fixed_at_clean_loss():
    model, (x0, targets) = TreeStub(), make_batch(n=3, seed=2)
    clean = _per_task_grads(model, x0, targets)
    x1 = (x0 + 0.05 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    obj = _objective(model, targets, StaticRelative())
    model.eval()
    obj.init_state(x0)
    # At the clean point every valid (sample, task) ratio is 1.
    torch.testing.assert_close(obj(x0, 0).objective, torch.full((3,), 3.0))
    moved = _per_task_grads(model, x1, targets)
    ev = obj(x1, 1)
    expected = sum(moved[t] / clean[t + "_loss"].view(-1, 1, 1, 1) for t in TASKS)
    torch.testing.assert_close(ev.grad, expected, rtol=1e-4, atol=1e-7)
    dynamic = _eval(model, x1, targets, DGBA()).grad
    assert not torch.allclose(ev.grad, dynamic, rtol=1e-3)
    history = PGD(0.03, steps=2, direction="static_relative").run(
        model, x0, targets, stub_losses(), record=True
    )
    torch.testing.assert_close(history.history[0].objective, torch.full((3,), 3.0))


def test_build_direction_strings():
    assert isinstance(build_direction("dgba"), DGBA)
    assert isinstance(build_direction("total"), Total)
    assert isinstance(build_direction("sign_sum"), SignSum)
    assert isinstance(build_direction("static_relative"), StaticRelative)
    assert isinstance(build_direction("dgba_reference"), DGBAReference)
    single = build_direction("single:seg")
    assert isinstance(single, Single) and single.task == "seg" and single.spec() == "single:seg"
    assert build_direction("dgba:1e-6").tau == 1e-6
    d = DGBA()
    assert build_direction(d) is d
    for bad in ("bogus", "single", "single:", "total:3"):
        with pytest.raises(ValueError):
            build_direction(bad)
    with pytest.raises(ValueError, match="unknown task 'edges'"):
        Single("edges").tasks_needed(TASKS)


def _real_model_and_tasks():
    """The models and tasks layers' real objects (a failure to build them is a failure of this test)."""
    channels = {"seg": 5, "normal": 3, "depth": 1}
    model = build_model(backbone="small_resnet", tasks=channels, layout="all_shared")
    specs = {
        "seg": build_task("seg", num_classes=5),
        "normal": build_task("normal"),
        "depth": build_task("depth"),
    }
    return model, specs


def test_dgba_equivalence_on_the_real_model():
    model, specs = _real_model_and_tasks()
    x, targets = make_batch(n=3, h=32, w=32, seed=7)
    assert int(targets["seg"][targets["seg"] != 255].max()) < 5  # stub labels fit the 5-class head
    model.eval()
    evs = {}
    for direction in (DGBA(), DGBAReference()):
        obj = MultiTaskObjective(model, targets, specs, direction, TASKS)
        evs[direction.name] = obj(x, 0)
    one, ref = evs["dgba"].grad, evs["dgba_reference"].grad
    torch.testing.assert_close(one, 3 * ref, rtol=1e-3, atol=1e-5 * float(3 * ref.abs().max()))
    model.train()
    x_adv = PGD(8 / 255, steps=2, direction="dgba")(model, x, targets, specs)
    assert model.training and (x_adv - x).abs().max() <= 8 / 255 + 1e-6


# ------------------------------------------------------------------------------ the direction registry
@pytest.fixture
def isolated_registry(monkeypatch):
    """Directions and styles registered by a test are gone after it (the registries are module dicts)."""
    from mtl_robust.attacks import directions as attack_directions
    from mtl_robust.values import direction as direction_values

    monkeypatch.setattr(attack_directions, "DIRECTIONS", dict(attack_directions.DIRECTIONS))
    monkeypatch.setattr(direction_values, "_STYLES", dict(direction_values._STYLES))
    return attack_directions


def _toy_class(register_direction, DirectionStyle, Direction):
    @register_direction(DirectionStyle("TOY", "tab:green", 4, arg_key="scale", arg_default=1.0))
    class Toy(Direction):
        """TOTAL scaled by `scale`: a direction with a numeric argument."""

        name = "toy"

        def __init__(self, scale: float = 1.0) -> None:
            self.scale = float(scale)

        def objective(self, losses, valid, state):
            return self.scale * sum(torch.where(valid[t], losses[t], 0.0) for t in losses)

    return Toy


def test_a_registered_direction_builds_from_its_name_and_keeps_its_argument(isolated_registry):
    from mtl_robust.attacks import Direction, register_direction
    from mtl_robust.values import DirectionSpec, DirectionStyle

    toy_class = _toy_class(register_direction, DirectionStyle, Direction)
    assert isolated_registry.DIRECTIONS["toy"] is toy_class
    assert isinstance(build_direction("toy"), toy_class) and build_direction("toy").spec() == "toy"
    scaled = build_direction("toy:0.5")
    assert scaled.scale == 0.5 and scaled.spec() == "toy:0.5"
    assert build_direction(scaled.spec()).scale == 0.5
    assert DirectionSpec.parse("toy:0.5").label == "TOY(scale=0.5)"
    # it attacks like any other direction: PGD moves the input and keeps the budget
    model, (x, targets) = TreeStub(), make_batch(n=2)
    x_adv = PGD(0.03, steps=2, direction="toy:2.0")(model, x, targets, stub_losses())
    assert 0 < float((x_adv - x).abs().max()) <= 0.03 + 1e-6


def test_build_direction_errors_list_the_registered_directions(isolated_registry):
    from mtl_robust.attacks import Direction, register_direction
    from mtl_robust.values import DirectionStyle

    _toy_class(register_direction, DirectionStyle, Direction)
    with pytest.raises(ValueError, match="unknown attack direction 'bogus'") as err:
        build_direction("bogus")
    for name in ("dgba", "minmax", "single:<task>", "static_relative", "toy", "total"):
        assert repr(name) in str(err.value)


def test_register_direction_refuses_a_taken_name_and_an_argument_the_class_lacks(isolated_registry):
    from mtl_robust.attacks import Direction, register_direction
    from mtl_robust.values import DirectionStyle

    with pytest.raises(ValueError, match="'dgba' is taken"):

        @register_direction()
        class OtherDGBA(Direction):
            name = "dgba"

    with pytest.raises(TypeError, match="arg_key 'gamma'"):

        @register_direction(DirectionStyle("{name}", arg_key="gamma"))
        class NoGamma(Direction):
            name = "no_gamma"


def test_a_plain_registered_direction_is_known_to_reports(isolated_registry):
    from mtl_robust.attacks import Direction, register_direction
    from mtl_robust.values.direction import registered

    @register_direction()
    class Plain(Direction):
        name = "plain"

        def objective(self, losses, valid, state):
            return sum(losses.values())

    assert "plain" in registered() and build_direction("plain").spec() == "plain"
    with pytest.raises(ValueError, match="takes no argument"):
        build_direction("plain:3")


TOY_MODULE = '''
"""A direction defined outside the package: its file plus conf/direction/far_toy.yaml."""
from mtl_robust.attacks.directions import Direction, register_direction
from mtl_robust.values import DirectionStyle


@register_direction(DirectionStyle("FAR", "tab:olive", 5, arg_key="tau", arg_default=1e-8))
class FarToy(Direction):
    name = "far_toy"

    def __init__(self, tau: float = 1e-8) -> None:
        self.tau = tau

    def objective(self, losses, valid, state):
        return sum(losses[t].clamp_min(self.tau).log() for t in losses)
'''


def test_a_direction_config_names_the_module_that_defines_it(isolated_registry, tmp_path, monkeypatch):
    from mtl_robust.attacks.config import attack_spec

    (tmp_path / "far_toy_direction.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "far_toy_direction", raising=False)
    try:
        direction = {"name": "far_toy", "tau": 1e-6, "module": "far_toy_direction", "task": None}
        spec = attack_spec({"method": "pgd", "eps": "4/255", "steps": 2}, direction)
        attack = spec.build()
        assert type(attack.direction).__name__ == "FarToy" and attack.direction.tau == 1e-6
        assert (
            str(spec.direction)
            == attack.direction.spec()
            == spec.row_config()["direction"]
            == "far_toy:1e-06"
        )
        assert str(attack_spec({"method": "pgd", "eps": 0.01}, "far_toy").direction) == "far_toy"
        model, (x, targets) = TreeStub(), make_batch(n=2)
        x_adv = attack(model, x, targets, stub_losses())
        assert 0 < float((x_adv - x).abs().max()) <= 4 / 255 + 1e-6
    finally:
        sys.modules.pop("far_toy_direction", None)
    with pytest.raises(ValueError, match="cannot be imported"):
        attack_spec({"method": "pgd", "eps": 0.01}, {"name": "gone", "module": "no_such_direction_module"})


@pytest.mark.parametrize(
    ("direction", "text"),
    [
        (DGBA(), "dgba"),
        (DGBA(tau=1e-6), "dgba:1e-06"),
        (StaticRelative(), "static_relative"),
        (StaticRelative(tau=1e-6), "static_relative:1e-06"),
        (DGBAReference(), "dgba_reference"),
        (DGBAReference(tau=1e-6), "dgba_reference:1e-06"),
        (MinMax(), "minmax"),
        (MinMax(tau=1e-6), "minmax:1e-06"),
        (Single("seg"), "single:seg"),
        (Total(), "total"),
        (SignSum(), "sign_sum"),
    ],
)
def test_spec_keeps_the_argument_and_rebuilds_the_same_direction(direction, text):
    assert direction.spec() == text
    rebuilt = build_direction(text)
    assert type(rebuilt) is type(direction) and vars(rebuilt) == vars(direction)
