"""Attack methods: invariants (mode, parameters, gradients), seeds, ascent, errors, units, history, losses."""

from __future__ import annotations

import math

import pytest
import torch

from mtl_robust.attacks import (
    APGD,
    FGSM,
    MIM,
    PGD,
    Attack,
    CosPGDL1Loss,
    CosPGDLoss,
    MultiTaskObjective,
    SegPGDLoss,
    Square,
    Total,
    build_attack,
    build_attack_loss,
    build_direction,
    from_pixels,
)
from tests.attack_stubs import LinearToy, TreeStub, make_batch, mean_loss, stub_losses, stub_tasks

torch.set_num_threads(1)
EPS = 8 / 255


def all_attacks(direction: str = "dgba") -> list[Attack]:
    return [
        FGSM(EPS, direction=direction),
        PGD(EPS, steps=3, direction=direction),
        PGD(EPS, steps=3, random_start=True, seed=0, direction=direction),
        MIM(EPS, steps=3, direction=direction),
        APGD(EPS, steps=4, direction=direction),
        APGD.paper(EPS, steps=4, direction=direction),
        Square(EPS, queries=8, direction=direction),
    ]


def _objective_value(model, x, targets, direction="dgba"):
    d = build_direction(direction)
    obj = MultiTaskObjective(model, targets, stub_losses(), d, d.tasks_needed(list(targets)))
    model.eval()
    obj.init_state(x)
    return obj(x, 0, need_grad=False).objective


@pytest.mark.parametrize("attack", all_attacks(), ids=repr)
def test_model_modes_restored_parameters_untouched_no_grads(attack):
    model, (x, targets) = TreeStub(), make_batch(n=2)
    model.train()
    model.stem.eval()  # one submodule in eval mode while the rest trains
    modes = {name: m.training for name, m in model.named_modules()}
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    x_before = x.clone()
    x_adv = attack(model, x, targets, stub_losses())
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert modes["stem"] is False and modes["seg_normal"] is True
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name]), name
        assert p.grad is None and p.requires_grad, name
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert torch.equal(x, x_before) and not x.requires_grad
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_crafting_runs_in_eval_mode_so_dropout_and_bn_are_deterministic():
    model, (x, targets) = TreeStub(), make_batch(n=3)
    model.train()
    a = PGD(EPS, steps=2, direction="total")(model, x, targets, stub_losses())
    b = PGD(EPS, steps=2, direction="total")(model, x, targets, stub_losses())
    assert torch.equal(a, b)
    # Samples are crafted independently (no train-mode BatchNorm coupling): one sample alone gives the same.
    single = PGD(EPS, steps=2, direction="total")(
        model, x[1:2], {k: v[1:2] for k, v in targets.items()}, stub_losses()
    )
    torch.testing.assert_close(single, a[1:2], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: PGD(EPS, 3, random_start=True, seed=s),
        lambda s: APGD(EPS, 4, seed=s),
        lambda s: Square(EPS, 8, n_restarts=2, seed=s),
    ],
)
def test_same_seed_same_result_other_seed_differs(make):
    model, (x, targets) = TreeStub(), make_batch(n=2)
    a = make(7)(model, x, targets, stub_losses())
    b = make(7)(model, x, targets, stub_losses())
    c = make(8)(model, x, targets, stub_losses())
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    attack = make(7)  # configured once, called many times: the seed restarts each call
    assert torch.equal(attack(model, x, targets, stub_losses()), attack(model, x, targets, stub_losses()))


@pytest.mark.parametrize("direction", ["total", "dgba", "single:seg", "static_relative", "sign_sum"])
def test_pgd_increases_the_directions_objective(direction):
    model, (x, targets) = TreeStub(), make_batch(n=3)
    x_adv = PGD(EPS, steps=5, direction=direction)(model, x, targets, stub_losses())
    d = build_direction(direction)
    obj = MultiTaskObjective(model, targets, stub_losses(), d, d.tasks_needed(list(targets)))
    model.eval()
    obj.init_state(x)  # static_relative: weights from the clean point, as inside the attack
    before = obj(x, 0, need_grad=False).objective
    after = obj(x_adv, 0, need_grad=False).objective
    assert (after > before).all(), (before, after)


def test_fgsm_is_one_full_sign_step_and_pgd_one_step_equals_it():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    fgsm = FGSM(EPS, direction="dgba")(model, x, targets, stub_losses())
    pgd = PGD(EPS, alpha=EPS, steps=1, direction="dgba")(model, x, targets, stub_losses())
    assert torch.equal(fgsm, pgd)
    moved = (fgsm - x).abs()
    inside = (x > EPS) & (x < 1 - EPS)
    torch.testing.assert_close(moved[inside], torch.full_like(moved[inside], EPS))


def test_pgd_default_alpha_and_ball_never_binds_without_random_start():
    attack = PGD(EPS, steps=4)
    assert attack.alpha == pytest.approx(EPS / 4)
    # LinearToy with mean loss: every step goes +alpha until the pixel bound, so after 4 steps x0 + eps.
    x = torch.full((1, 1, 2, 2), 0.5)
    x_adv = attack(LinearToy(), x, {"a": x}, {"a": mean_loss})
    torch.testing.assert_close(x_adv, x + EPS)
    x_hi = torch.full((1, 1, 2, 2), 0.99)
    assert torch.equal(attack(LinearToy(), x_hi, {"a": x}, {"a": mean_loss}), torch.ones_like(x_hi))


def test_mim_normalises_per_sample_and_accumulates():
    # Per-sample mean-abs normalisation: a sample with a tiny gradient moves as far as one with a big one.
    class Scaled(LinearToy):
        def forward(self, x, tasks=None):
            scale = torch.tensor([1e-6, 1e3]).view(2, 1, 1, 1)
            return {"a": x * scale}

    x = torch.full((2, 1, 2, 2), 0.5)
    x_adv = MIM(EPS, steps=3)(Scaled(), x, {"a": x}, {"a": mean_loss})
    torch.testing.assert_close(x_adv, x + EPS)
    zero = MIM(EPS, steps=3)(LinearToy(), x, {"a": x}, {"a": lambda p, t: p.flatten(1).mean(1) * 0.0})
    assert torch.equal(zero, x)  # zero gradient: no NaN from 0 / mean|0|, no move
    assert MIM(EPS).decay == 1.0 and MIM(EPS, steps=5).alpha == pytest.approx(EPS / 5)


def test_pixel_units():
    assert from_pixels(8) == 8 / 255
    attack = build_attack("pgd", pixel_eps=8, pixel_alpha=2, steps=10)
    assert attack.eps == 8 / 255
    assert attack.alpha == 2 / 255 and attack.steps == 10
    assert build_attack("pgd", pixel_eps=4, direction="dgba").eps == 4 / 255
    assert isinstance(build_attack("apgd_paper", eps=0.1), APGD)
    assert build_attack("apgd_paper", eps=0.1).variant == "paper"


def test_repr_lists_hyper_parameters():
    text = repr(
        PGD(EPS, steps=7, random_start=True, seed=3, direction="dgba", attack_losses={"seg": "segpgd"})
    )
    for part in (
        "PGD(",
        "eps=0.0313725",
        "steps=7",
        "alpha=0.00448",
        "random_start=True",
        "DGBA(",
        "seed=3",
        "SegPGDLoss",
    ):
        assert part in text, (part, text)
    assert "variant='paper'" in repr(APGD.paper(EPS)) and "n_restarts=1" in repr(APGD(EPS))
    assert "decay=" in repr(MIM(EPS))


def test_eps_zero_returns_the_input():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    for attack in (FGSM(0.0), PGD(0.0, steps=2), MIM(0.0, steps=2), APGD(0.0, steps=3)):
        assert torch.equal(attack(model, x, targets, stub_losses()), x)


def test_history_records_every_iterate():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    result = PGD(EPS, steps=4, direction="dgba").run(model, x, targets, stub_losses(), record=True)
    assert [r.step for r in result.history] == [0, 1, 2, 3, 4]
    assert [r.step_size for r in result.history] == [pytest.approx(EPS / 4)] * 4 + [None]
    assert all(r.objective.shape == (2,) for r in result.history)
    assert set(result.history[0].task_losses) == {"seg", "normal", "depth"}
    final = _objective_value(model, result.x_adv, targets, "dgba")
    torch.testing.assert_close(result.history[-1].objective, final)
    assert result.history[-1].objective_mean > result.history[0].objective_mean
    assert PGD(EPS, steps=2).run(model, x, targets, stub_losses()).history == []


def test_with_losses_gives_a_three_argument_attack():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    attack = PGD(EPS, steps=2, direction="dgba")
    fixed = attack.with_losses(stub_tasks())
    assert torch.equal(fixed(model, x, targets), attack(model, x, targets, stub_losses()))


def test_tasks_and_bound_losses_are_both_accepted_and_give_validity():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    a = PGD(EPS, steps=2, direction="dgba")(model, x, targets, stub_tasks())
    b = PGD(EPS, steps=2, direction="dgba")(model, x, targets, stub_losses())
    assert torch.equal(a, b)
    targets["seg"][0] = 255
    obj = MultiTaskObjective(model, targets, stub_losses(), Total(), ["seg", "depth"])
    assert obj.valid["seg"].tolist() == [False, True] and obj.valid["depth"].tolist() == [True, True]
    plain = MultiTaskObjective(model, targets, {"seg": lambda p, t: p.mean((1, 2, 3))}, Total(), ["seg"])
    assert plain.valid["seg"].tolist() == [True, True]
    given = MultiTaskObjective(
        model, targets, stub_losses(), Total(), ["seg"], valid={"seg": torch.tensor([True, False])}
    )
    assert given.valid["seg"].tolist() == [True, False]


def test_attack_loss_override_sees_iteration_index():
    seen = []

    class Recording:
        step_aware = True

        def __call__(self, pred, target, *, step, total_steps):
            seen.append((step, total_steps))
            return pred.flatten(1).mean(1)

        def judge(self, pred, target):
            seen.append("judge")
            return pred.flatten(1).mean(1)

    x = torch.full((1, 1, 2, 2), 0.5)
    attack = PGD(EPS, steps=3, attack_losses={"a": Recording()})
    x_adv = attack.run(LinearToy(), x, {"a": x}, {"a": lambda p, t: -mean_loss(p, t)}, record=True).x_adv
    # 3 gradient steps (each also judged), then the recorded final iterate, judged only
    assert seen == [(0, 3), "judge", (1, 3), "judge", (2, 3), "judge", "judge"]
    torch.testing.assert_close(x_adv, x + EPS)  # the override (ascend mean) replaced the given loss


def test_works_under_inference_mode_and_no_grad():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    expected = PGD(EPS, steps=2, direction="dgba")(model, x, targets, stub_losses())
    with torch.inference_mode():
        xi, ti = x.clone(), {k: v.clone() for k, v in targets.items()}
        got = PGD(EPS, steps=2, direction="dgba")(model, xi, ti, stub_losses())
    assert torch.equal(got.clone(), expected)
    with torch.no_grad():
        assert torch.equal(PGD(EPS, steps=2, direction="dgba")(model, x, targets, stub_losses()), expected)


def test_slightly_out_of_range_input_is_clamped():
    model, (x, targets) = TreeStub(), make_batch(n=1)
    x = x.clone()
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -1e-7, 1 + 1e-7
    x_adv = PGD(EPS, steps=2)(model, x, targets, stub_losses())
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: PGD(-0.1), "eps must lie in"),
        (lambda: PGD(1.5), "eps must lie in"),
        (lambda: PGD(math.nan), "eps must lie in"),
        (lambda: PGD(EPS, steps=0), "steps must be an integer >= 1"),
        (lambda: PGD(EPS, steps=2.5), "steps must be an integer >= 1"),
        (lambda: PGD(EPS, alpha=0.0), "alpha must be"),
        (lambda: PGD(EPS, alpha=-1.0), "alpha must be"),
        (lambda: MIM(EPS, decay=-1.0), "decay"),
        (lambda: APGD(EPS, steps=0), "steps must be"),
        (lambda: APGD(EPS, n_restarts=0), "n_restarts"),
        (lambda: APGD(EPS, variant="fast"), "variant"),
        (lambda: PGD(EPS, direction="bogus"), "unknown attack direction"),
        (lambda: PGD(EPS, attack_losses={"seg": "bogus"}), "unknown attack loss"),
        (lambda: build_attack("cw", eps=0.1), "unknown attack method"),
        (lambda: Square(EPS, queries=0), "queries must be an integer >= 1"),
        (lambda: Square(EPS, p_init=0.0), "p_init must be"),
        (lambda: Square(EPS, p_init=1.5), "p_init must lie in"),
        (lambda: Square(EPS, n_restarts=0), "n_restarts"),
        (lambda: Square(EPS, direction="sign_sum"), "only in its gradient step"),
        (lambda: Square(EPS, attack_losses={"seg": "segpgd"}), "schedule over gradient steps"),
    ],
)
def test_bad_hyper_parameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def _bad_calls():
    x, targets = make_batch(n=2)
    nan_x = x.clone()
    nan_x[0, 0, 0, 0] = math.nan
    inf_x = x.clone()
    inf_x[1, 2, 1, 1] = math.inf
    short = {**targets, "depth": targets["depth"][:1]}
    missing = {k: v for k, v in targets.items() if k != "normal"}
    return [
        ("dgba", nan_x, targets, stub_losses(), "NaN or inf"),
        ("dgba", inf_x, targets, stub_losses(), "NaN or inf"),
        ("dgba", x * 2.0, targets, stub_losses(), r"\[0, 1\]"),
        ("dgba", x - 0.5, targets, stub_losses(), r"\[0, 1\]"),
        ("dgba", x.long(), targets, stub_losses(), "float tensor"),
        ("dgba", x, short, stub_losses(), "batch size"),
        ("dgba", x, missing, stub_losses(), "no entry for task 'normal'"),
        ("single:edges", x, targets, stub_losses(), "unknown task 'edges'"),
        ("dgba", x, targets, {}, "non-empty mapping"),
    ]


@pytest.mark.parametrize(("direction", "x", "targets", "losses", "match"), _bad_calls())
def test_bad_call_arguments_fail_before_any_forward_pass(direction, x, targets, losses, match):
    for attack in (PGD(EPS, steps=2, direction=direction), Square(EPS, queries=2, direction=direction)):
        model = TreeStub()
        with pytest.raises(ValueError, match=match):
            attack(model, x, targets, losses)
        assert model.calls == []


def test_single_task_unknown_to_the_model_is_an_error():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    targets["edges"] = targets["depth"]
    losses = {**stub_losses(), "edges": stub_tasks()["depth"].loss}
    with pytest.raises(ValueError, match="the model has no task 'edges'"):
        PGD(EPS, direction="single:edges")(model, x, targets, losses)
    assert model.calls == []


def test_loss_with_wrong_shape_is_reported():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    with pytest.raises(ValueError, match="per-sample losses of shape"):
        PGD(EPS)(model, x, targets, {"seg": lambda p, t: p.mean()})


# ---------------------------------------------------------------------------------------- attack losses
def test_segpgd_lambda_schedule_and_weighting():
    assert [SegPGDLoss.weight(k, 4) for k in range(5)] == [0.0, 0.125, 0.25, 0.375, 0.5]
    # Two pixels: pixel 0 is correct (logit 2 for class 0), pixel 1 is wrong; pixel 2 ignored.
    pred = torch.tensor([[[[2.0, 2.0, 5.0]], [[0.0, 0.0, 0.0]]]])  # [1, 2 classes, 1, 3]
    target = torch.tensor([[[0, 1, 255]]])
    ce_correct = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    ce_wrong = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[1]
    loss = SegPGDLoss()
    for k, lam in ((0, 0.0), (2, 0.25), (4, 0.5)):
        value = loss(pred, target, step=k, total_steps=4)
        assert value.shape == (1,)
        expected = ((1 - lam) * ce_correct + lam * ce_wrong) / 2
        torch.testing.assert_close(value, expected.reshape(1))
    assert loss(pred, torch.full_like(target, 255)).tolist() == [0.0]


def test_cospgd_weights_by_detached_cosine():
    pred = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    target[1] = 255
    value = CosPGDLoss()(pred, target)
    assert value.shape == (2,) and value[1] == 0
    probs = pred.detach().softmax(1)
    py = probs.gather(1, target[:1].unsqueeze(1)).squeeze(1)
    cos = py / probs[:1].norm(dim=1)
    ce = torch.nn.functional.cross_entropy(pred.detach()[:1], target[:1], reduction="none")
    torch.testing.assert_close(value[0], (cos * ce).mean())
    # The cosine is a constant weight: the gradient is cos * dCE.
    (grad,) = torch.autograd.grad(value[0], pred)
    pred2 = pred.detach()[:1].clone().requires_grad_(True)
    (grad2,) = torch.autograd.grad(
        (cos * torch.nn.functional.cross_entropy(pred2, target[:1], reduction="none")).mean(), pred2
    )
    torch.testing.assert_close(grad[:1], grad2)
    assert CosPGDLoss(activation="sigmoid")(pred, target).shape == (2,)


def test_cospgd_l1_regression_and_resizing():
    pred = torch.rand(2, 3, 2, 2)
    target = torch.rand(2, 3, 4, 4)
    target[0, :, 0, 0] = 0.0  # one invalid pixel
    value = CosPGDL1Loss()(pred, target)
    assert value.shape == (2,) and torch.isfinite(value).all()
    depth_pred, depth = torch.full((1, 1, 2, 2), 1.0), torch.tensor([[[[0.5, 0.0], [3.0, 1.0]]]])
    # One channel: weight 1, plain masked L1 over the 3 valid pixels.
    torch.testing.assert_close(CosPGDL1Loss()(depth_pred, depth), torch.tensor([(0.5 + 2.0 + 0.0) / 3]))


def test_attack_losses_plug_in_by_name():
    model, (x, targets) = TreeStub(), make_batch(n=2)
    attack = PGD(EPS, steps=3, direction="dgba", attack_losses={"seg": "segpgd", "normal": "cospgd_l1"})
    assert isinstance(attack.attack_losses["seg"], SegPGDLoss)
    result = attack.run(model, x, targets, stub_losses(), record=True)
    assert (result.x_adv - x).abs().max() <= EPS + 1e-6
    assert build_attack_loss("cospgd").activation == "softmax"


def test_config_budgets_accept_fractions_and_pixel_units() -> None:
    from mtl_robust.attacks.config import attack_from_config, normalized_attack_config, parse_budget

    assert parse_budget("8/255") == pytest.approx(8 / 255)
    assert parse_budget(0.5) == 0.5
    with pytest.raises(ValueError, match="8/255"):
        parse_budget("eight")
    cfg = normalized_attack_config(
        {"method": "pgd", "pixel_eps": 8, "steps": 10}, {"name": "single", "task": "seg"}
    )
    assert cfg["eps"] == pytest.approx(8 / 255) and cfg["direction"] == "single:seg"
    attack = attack_from_config(
        {"method": "pgd", "eps": "4/255", "steps": 5, "alpha": None}, {"name": "dgba"}
    )
    assert attack.eps == pytest.approx(4 / 255) and attack.alpha == pytest.approx(4 / 255 / 5)
    with pytest.raises(ValueError, match="eps"):
        attack_from_config({"method": "pgd", "eps": "2", "steps": 5}, "dgba")
    with pytest.raises(ValueError, match="task"):
        attack_from_config({"method": "pgd", "eps": 0.1}, {"name": "single"})


def test_an_attack_config_is_normalised_once_into_the_row_fields_stores_keyed() -> None:
    from mtl_robust.attacks.config import attack_spec

    hydra_attack = {"method": "pgd", "eps": None, "pixel_eps": 8, "steps": 10, "alpha": None, "seed": 0}
    spec = attack_spec(
        {**hydra_attack, "attack_losses": {}}, {"name": "single", "task": "seg", "module": None}
    )
    row = spec.row_config()
    # the fields, their order and their bits are what stores have always keyed rows by
    assert list(row) == ["method", "steps", "seed", "attack_losses", "eps", "direction", "pixel_eps"]
    assert row["eps"] == 8.0 / 255.0 and row["pixel_eps"] == (8.0 / 255.0) * 255.0
    assert row["direction"] == "single:seg" and spec.direction.task == "seg"
    given_as_eps = attack_spec({"method": "pgd", "eps": "8/255", "steps": 10}, "dgba").row_config()
    assert list(given_as_eps) == ["method", "eps", "steps", "attack_losses", "direction", "pixel_eps"]
    attack = spec.build()
    assert attack.direction.spec() == "single:seg" and attack.eps == row["eps"]
    # the spec is a value: building from it leaves it as it was
    assert spec.row_config() == row
