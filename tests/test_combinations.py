"""The combination matrix: every registered method x every registered direction x attack loss (none, SegPGD,
CosPGD) x consumer (attack, ensemble member, each fast-AT variant and crafting mode, GradAlign), and for
the attacks the norm axis (L2, L1: the ball of that norm, the direction's exact step in that norm).

Each combination either runs or is refused by one clear config error before any model work. A run keeps
the eps-ball and the [0, 1] range, leaves an attacked model's modes, parameters and buffers as they were, and
takes the step of the direction it is labelled with: its first step equals that direction's own step
(`Direction.step` of its ascent direction, with its state read at the clean x), computed here from a freshly
built direction. Square takes no step: it searches on the labelled direction's objective, so the objective
it ends on is that direction's, freshly built, at its x_adv, and no lower than where it started. Tiny
models and one step per case, so the whole matrix stays within seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mtl_robust.attacks.base import project
from mtl_robust.attacks.config import attack_from_config, ensemble_from_config
from mtl_robust.attacks.directions import DIRECTIONS, build_direction
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.norms import norms_of
from mtl_robust.attacks.norms import project as project_norm
from mtl_robust.attacks.objective import MultiTaskObjective
from mtl_robust.attacks.registry import METHODS
from mtl_robust.lightning.fast_at import FastAdversarialTraining, parse_fast_at
from mtl_robust.tasks import build_tasks
from mtl_robust.values.norm import Norm
from tests.attack_stubs import SEG_CLASSES, TreeStub, make_batch, stub_tasks

torch.set_num_threads(1)
EPS = 8 / 255

ATTACK_METHODS = sorted([*METHODS, "apgd_paper"])
# The package's own directions (a test may register more, e.g. the toy direction), each with its argument
# (STEALTH with its target set), and two joint directions over a target set (the set axis, issue #31). Not
# `weighted`: it attacks with a trained model's weights, which the attack job binds (TOTAL with a scalar per
# task; tests/test_weighted_direction.py checks its step is TOTAL's under every norm).
WITH_ARGUMENT = {"single": "single:seg", "stealth": "stealth@depth"}
TARGET_SET_LABELS = ["dgba@seg+depth", "minmax@normal+depth"]
DIRECTION_LABELS = sorted(
    [
        WITH_ARGUMENT.get(name, name)
        for name, cls in DIRECTIONS.items()
        if cls.__module__.startswith("mtl_robust.") and not getattr(cls, "needs_model_weights", False)
    ]
    + TARGET_SET_LABELS
)
ATTACK_LOSSES = {"none": {}, "segpgd": {"seg": "segpgd"}, "cospgd": {"seg": "cospgd"}}

# One step from the clean x, so the step taken is the direction's first step.
ONE_STEP = {
    "fgsm": {},
    "pgd": {"steps": 1, "alpha": EPS},
    "mim": {"steps": 1, "alpha": EPS},
    "apgd": {"steps": 1, "random_start": False},
    "apgd_paper": {"steps": 1},
    "square": {"queries": 3},
}
# The first step's size (APGD's reference variant starts at 2 eps, the paper's at eps / steps).
FIRST_STEP = {"fgsm": EPS, "pgd": EPS, "mim": EPS, "apgd": 2 * EPS, "apgd_paper": EPS}

FAST_AT = {
    "fgsm_rs": {"name": "fgsm_rs"},
    "fgsm_rs[craft=train]": {"name": "fgsm_rs", "craft": "train"},
    "n_fgsm": {"name": "n_fgsm", "noise": 0},
    "n_fgsm[craft=train]": {"name": "n_fgsm", "noise": 0, "craft": "train"},
    "free_at": {"name": "free_at", "replays": 1},
    "fgsm_rs[gradalign]": {"name": "fgsm_rs", "grad_align": 0.5},
    "free_at[gradalign]": {"name": "free_at", "replays": 1, "grad_align": 0.5},
}


def refusal(consumer: str, direction: str, loss: str) -> str | None:
    """Why a combination is refused by design (the error's words), or None when it must run."""
    if consumer == "square" and direction in ("sign_sum", "dgba_reference"):
        return "only in its gradient step"  # without gradients it is TOTAL / DGBA under another label
    if consumer == "square" and loss == "segpgd":
        return "schedule over gradient steps"
    if consumer in FAST_AT and loss != "none":
        return "does not take attack_losses"  # fast AT ascends the training losses
    if consumer in FAST_AT and "grad_align" in FAST_AT[consumer]:
        if not build_direction(direction).gradient_of_objective:
            return "needs a direction whose ascent is the gradient of its objective"
    return None


def interior_batch() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x, targets = make_batch(n=2, h=4, w=4, seed=1)
    return 0.25 + 0.5 * x, targets  # no step is cut by the pixel range


def own_objective(model, x, targets, tasks, direction: str, losses: dict[str, str], x_eval):
    """The labelled direction's objective at x_eval, from a direction built afresh (state read at x)."""
    built = build_direction(direction)
    attack = attack_from_config({"method": "fgsm", "eps": EPS, "attack_losses": losses}, direction)
    objective = MultiTaskObjective(
        model, targets, tasks, built, built.tasks_needed(list(tasks)), attack_losses=attack.attack_losses
    )
    with eval_mode(model):
        objective.init_state(x)
        return objective(x_eval, 0, need_grad=False).objective


def own_step(model, x, targets, tasks, direction: str, losses: dict[str, str], clean=None):
    """The labelled direction's step at x in the model's modes, from a direction built afresh (its state
    read at the clean x, default x, in eval mode, as every consumer reads it)."""
    built = build_direction(direction)
    attack = attack_from_config({"method": "fgsm", "eps": EPS, "attack_losses": losses}, direction)
    objective = MultiTaskObjective(
        model,
        targets,
        tasks,
        built,
        built.tasks_needed(list(tasks)),
        attack_losses=attack.attack_losses,
    )
    with eval_mode(model):
        objective.init_state(x if clean is None else clean)
    return built.step(objective(x, 0).grad)


def attack_config(method: str, direction: str, loss: str) -> dict:
    return {"method": method, "eps": EPS, "attack_losses": ATTACK_LOSSES[loss], **ONE_STEP[method]}


def snapshot(model: torch.nn.Module) -> tuple[dict, list[bool]]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, [m.training for m in model.modules()]


# ------------------------------------------------------------------------------------ the norm axis
NORM_EPS = {"l2": 0.5, "l1": 2.0}
# The first step's size over eps (APGD-L2 starts at 2 eps as under L-inf, APGD-L1 at eps as auto-attack).
NORM_FIRST_STEP = {"fgsm": 1.0, "pgd": 1.0, "mim": 1.0, "apgd": 2.0, "apgd_paper": 1.0}
# The attack-loss axis is orthogonal to the norm: no override and the step-dependent one (SegPGD).
NORM_LOSSES = ("none", "segpgd")


def norm_refusal(method: str, direction: str, norm: str) -> str | None:
    """Why a combination is refused under a norm other than L-inf (the first check that fires), or None."""
    if method == "square" and norm == "l1":
        return "linf/l2 only"  # Square-L1 is not implemented
    if direction == "sign_sum":
        return "vote of gradient signs"  # a step of the box only
    if direction.startswith("stealth"):
        return "L-inf box's LP only"
    if method == "apgd_paper" and norm == "l1":
        return "no L1 form"
    return None


@pytest.mark.parametrize("norm", sorted(NORM_EPS))
@pytest.mark.parametrize("loss", NORM_LOSSES)
@pytest.mark.parametrize("direction", DIRECTION_LABELS)
@pytest.mark.parametrize("method", ATTACK_METHODS)
def test_attack_under_a_norm_takes_its_labelled_step_in_that_norm(method, direction, loss, norm) -> None:
    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = interior_batch()
    eps = NORM_EPS[norm]
    config = {**attack_config(method, direction, loss), "eps": eps, "norm": norm}
    if "alpha" in config:
        config["alpha"] = eps
    why = norm_refusal(method, direction, norm) or refusal(method, direction, loss)
    if why is not None:
        with pytest.raises(ValueError, match=why):
            attack_from_config(config, direction)
        return
    before_state, before_modes = snapshot(model)
    attack = attack_from_config(config, direction)
    x_adv = attack(model, x, targets, tasks)
    geometry = Norm.parse(norm)
    assert (norms_of(x_adv - x, geometry) <= eps * (1 + 1e-5)).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    after_state, after_modes = snapshot(model)
    assert after_modes == before_modes
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    assert all(p.grad is None for p in model.parameters())

    if method == "square":  # no step: it searches on the labelled direction's objective, on the sphere
        result = attack.run(model, x, targets, tasks, record=True)
        found = own_objective(model.eval(), x, targets, tasks, direction, ATTACK_LOSSES[loss], result.x_adv)
        torch.testing.assert_close(found, result.history[-1].objective, atol=1e-6, rtol=0)
        assert (found >= result.history[0].objective).all()
        return
    built = build_direction(direction).for_norm(geometry)
    grad = own_step_gradient(model.eval(), x, targets, tasks, built, ATTACK_LOSSES[loss])
    size = (1.0 if (method, norm) == ("apgd", "l1") else NORM_FIRST_STEP[method]) * eps
    expected = project_norm(x + size * built.step(grad, geometry), x, eps, geometry)
    if method.startswith("apgd"):
        improved = attack.score(model, x, targets, tasks, expected) > attack.score(
            model, x, targets, tasks, x
        )
        expected = torch.where(improved[:, None, None, None], expected, x)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)


def own_step_gradient(model, x, targets, tasks, built, losses: dict[str, str]) -> torch.Tensor:
    """The ascent direction at x of a freshly built direction (state read at x, in eval mode)."""
    attack = attack_from_config({"method": "fgsm", "eps": EPS, "attack_losses": losses}, "total")
    objective = MultiTaskObjective(
        model, targets, tasks, built, built.tasks_needed(list(tasks)), attack_losses=attack.attack_losses
    )
    with eval_mode(model):
        objective.init_state(x)
    return objective(x, 0).grad


# --------------------------------------------------------------------------------- attacks, ensemble
@pytest.mark.parametrize("loss", sorted(ATTACK_LOSSES))
@pytest.mark.parametrize("direction", DIRECTION_LABELS)
@pytest.mark.parametrize("method", ATTACK_METHODS)
def test_attack_takes_its_labelled_step_and_leaves_the_model_alone(method, direction, loss) -> None:
    model, tasks = TreeStub(width=4), stub_tasks()
    model.heads["seg"].train()  # a submodule in its own mode must get it back
    x, targets = interior_batch()
    why = refusal(method, direction, loss)
    if why is not None:
        with pytest.raises(ValueError, match=why):
            attack_from_config(attack_config(method, direction, loss), direction)
        return
    before_state, before_modes = snapshot(model)
    attack = attack_from_config(attack_config(method, direction, loss), direction)
    result = attack.run(model, x, targets, tasks, record=True)
    x_adv = result.x_adv

    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    after_state, after_modes = snapshot(model)
    assert after_modes == before_modes
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    assert all(p.grad is None for p in model.parameters())

    if method == "square":
        found = own_objective(model.eval(), x, targets, tasks, direction, ATTACK_LOSSES[loss], x_adv)
        torch.testing.assert_close(found, result.history[-1].objective, atol=1e-6, rtol=0)
        assert (found >= result.history[0].objective).all()
        return
    step = own_step(model.eval(), x, targets, tasks, direction, ATTACK_LOSSES[loss])
    expected = project(x + FIRST_STEP[method] * step, x, EPS)
    if method.startswith("apgd"):
        # APGD returns, per sample, its first iterate where that scores higher than the start, else x.
        improved = attack.score(model, x, targets, tasks, expected) > attack.score(
            model, x, targets, tasks, x
        )
        torch.testing.assert_close(
            x_adv, torch.where(improved[:, None, None, None], expected, x), atol=1e-6, rtol=0
        )
    else:
        torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss", sorted(ATTACK_LOSSES))
@pytest.mark.parametrize("direction", DIRECTION_LABELS)
@pytest.mark.parametrize("method", ATTACK_METHODS)
def test_an_ensemble_member_attacks_as_the_attack_alone(method, direction, loss) -> None:
    model = TreeStub(width=4)
    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)  # the ensemble scores metrics
    x, targets = interior_batch()
    member = {**attack_config(method, direction, loss), "direction": direction}
    member.pop("eps")
    why = refusal(method, direction, loss)
    if why is not None:
        with pytest.raises(ValueError, match=why):
            ensemble_from_config({"method": "ensemble", "eps": EPS, "members": {"m": member}}, list(tasks))
        return
    ensemble = ensemble_from_config(
        {"method": "ensemble", "eps": EPS, "rules": ["joint"], "members": {"m": member}}, list(tasks)
    )
    alone = attack_from_config(attack_config(method, direction, loss), direction)
    result = ensemble.run(model, x, targets, tasks)
    torch.testing.assert_close(result.x_adv["joint"], alone(model, x, targets, tasks), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------- fast AT
def fast_at_cases() -> list[tuple[str, str, str]]:
    return [(c, d, loss) for c in FAST_AT for d in DIRECTION_LABELS for loss in ATTACK_LOSSES]


def no_step(before_update=None):
    """An optimiser step that leaves the weights where they are (the test compares against them)."""

    def step(loss: torch.Tensor, *_parts) -> None:
        loss.backward()

    return step


@pytest.mark.parametrize(("consumer", "direction", "loss"), fast_at_cases())
def test_fast_at_runs_its_labelled_direction_or_refuses_before_any_work(consumer, direction, loss) -> None:
    config = {**FAST_AT[consumer], "direction": direction}
    if loss != "none":
        config["attack_losses"] = ATTACK_LOSSES[loss]
    why = refusal(consumer, direction, loss)
    if why is not None:
        with pytest.raises(ValueError, match=why):
            parse_fast_at(config)
        return
    tasks = stub_tasks()
    model = TreeStub(width=4)
    model.heads["seg"][0].p = 0.0  # no dropout: the training forward is deterministic
    model.train()
    x, targets = interior_batch()
    fast = FastAdversarialTraining(parse_fast_at(config), tasks, {t: 1.0 for t in tasks})
    craft_in_train = consumer.startswith("free_at") or "craft=train" in consumer
    reference = copy.deepcopy(model).train(craft_in_train)

    if consumer.startswith("free_at"):
        step = own_step(reference, x, targets, tasks, direction, {})
        fast.step(model, tasks, x, targets, no_step())
        perturbation = fast.delta
        expected = (x + EPS * step).clamp(x - EPS, x + EPS) - x  # alpha = eps from delta = 0
    else:
        if "grad_align" in config:
            fast.step(model, tasks, x, targets, no_step())  # runs, penalty included
            reference = copy.deepcopy(model).train(craft_in_train)  # BatchNorm statistics moved
        cfg = fast.config
        torch.manual_seed(3)
        perturbation = fast.single_step_example(model, tasks, x, targets) - x
        torch.manual_seed(3)  # the same uniform start
        start = (x + (2 * torch.rand_like(x) - 1) * cfg.noise).clamp(0, 1)
        step = own_step(reference, start, targets, tasks, direction, {}, clean=x)
        expected = start + cfg.alpha * step
        expected = (project(expected, x, cfg.eps) if cfg.project else expected.clamp(0, 1)) - x
    torch.testing.assert_close(perturbation, expected, atol=1e-6, rtol=0)
    assert (x + perturbation).min() >= 0 and (x + perturbation).max() <= 1


def test_the_matrix_size_and_its_refusals_by_design() -> None:
    """The numbers the closing note quotes: how many combinations there are and how many are refused."""
    attack_cases = len(ATTACK_METHODS) * len(DIRECTION_LABELS) * len(ATTACK_LOSSES)
    square = [("square", d, loss) for d in DIRECTION_LABELS for loss in ATTACK_LOSSES]
    assert sum(refusal(*case) is not None for case in square) == 14  # {sign_sum, dgba_reference} x 3 + SegPGD
    fast = fast_at_cases()
    refused = [case for case in fast if refusal(*case) is not None]
    by_losses = [case for case in refused if case[2] != "none"]
    assert (len(ATTACK_METHODS), len(DIRECTION_LABELS), len(ATTACK_LOSSES)) == (6, 10, 3)
    assert attack_cases == 180  # as attacks, and again as ensemble members
    assert len(fast) == 210
    assert len(by_losses) == 140  # fast AT ascends training losses: attack losses are refused
    # GradAlign x {sign_sum, dgba_reference, minmax, minmax over a set, stealth}
    assert len(refused) - len(by_losses) == 10
    norm_cases = [(m, d, n) for m in ATTACK_METHODS for d in DIRECTION_LABELS for n in NORM_EPS]
    # Square-L1 (10), sign_sum and stealth (2 x 5 other methods + Square-L2 each), apgd_paper-L1 (8 others)
    assert sum(norm_refusal(*case) is not None for case in norm_cases) == 10 + 2 * 11 + 8
    assert len(EOT_CASES) == 6 * 10 - 2  # every method with EOT, Square's two refused labels left out


# ------------------------------------------------------------------------------------------------ EOT
TWO_STEPS = {
    "fgsm": {},
    "pgd": {"steps": 2},
    "mim": {"steps": 2},
    "apgd": {"steps": 2, "random_start": False},
    "apgd_paper": {"steps": 2},
    "square": {"queries": 4},
}
EOT_CASES = [(m, d) for m in ATTACK_METHODS for d in DIRECTION_LABELS if refusal(m, d, "none") is None]


@pytest.mark.parametrize(("method", "direction"), EOT_CASES)
def test_eot_on_a_deterministic_model_takes_the_same_steps(method, direction) -> None:
    """Two EOT samples of a deterministic model average two equal terms (exact in float), so every method
    and direction must give the x_adv of a single pass; a direction that averaged the wrong thing (signs,
    LP steps) or a method that judged iterates (Square: proposals) by something else would differ. The
    model is left alone."""
    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = interior_batch()
    before_state, before_modes = snapshot(model)
    config = {"method": method, "eps": EPS, **TWO_STEPS[method]}
    single = attack_from_config(config, direction)(model, x, targets, tasks)
    eot = attack_from_config({**config, "eot_samples": 2}, direction)(model, x, targets, tasks)
    assert torch.equal(eot, single)
    after_state, after_modes = snapshot(model)
    assert after_modes == before_modes and all(
        torch.equal(before_state[k], after_state[k]) for k in before_state
    )
    assert all(p.grad is None for p in model.parameters())


def test_eot_in_an_ensemble_member() -> None:
    model = TreeStub(width=4)
    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)
    x, targets = interior_batch()
    member = {"method": "pgd", "steps": 2, "direction": "minmax", "eot_samples": 2}
    ensemble = ensemble_from_config(
        {"method": "ensemble", "eps": EPS, "rules": ["joint"], "members": {"m": member}}, list(tasks)
    )
    assert ensemble.members["m"].eot_samples == 2
    alone = attack_from_config({"method": "pgd", "eps": EPS, "steps": 2}, "minmax")
    torch.testing.assert_close(
        ensemble.run(model, x, targets, tasks).x_adv["joint"], alone(model, x, targets, tasks)
    )
