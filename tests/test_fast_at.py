"""Fast adversarial training: budgets, the shared backward of Free AT, pass counts, config errors, names."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mtl_robust.attacks.fgsm import FGSM
from mtl_robust.jobs.train import build_module, train
from mtl_robust.lightning.fast_at import FastAdversarialTraining, parse_fast_at, training_epochs
from mtl_robust.lightning.module import MultiTaskModule, defense_name, load_module

EPS = 8 / 255


def module_and_batch(compose, overrides: list[str], n: int = 4):
    cfg = compose(["experiment=smoke", *overrides])
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    dataset = datamodule.dataset("train")
    items = [dataset[i] for i in range(n)]
    x = torch.stack([i[0] for i in items])
    targets = {t: torch.stack([i[1][t] for i in items]) for t in items[0][1]}
    return module, x, targets, cfg


def sgd_step(module: MultiTaskModule, log: list[float]):
    optimizer = torch.optim.SGD(module.parameters(), lr=0.0)  # lr 0: the weights stay where the test put them

    def step(loss: torch.Tensor, *_parts) -> None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(float(loss.detach()))

    return step


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (["defense=fgsm_rs"], "fgsm_rs:total"),
        (["defense=dgba/fgsm_rs"], "fgsm_rs:dgba"),
        (
            ["defense=n_fgsm", "defense.direction.name=single", "+defense.direction.task=seg"],
            "n_fgsm:single:seg",
        ),
        (["defense=dgba/free_at", "defense.replays=8"], "free_at[m=8]:dgba"),
        (
            ["defense=fgsm_rs", "defense.grad_align=0.2", "defense.alpha=12/255"],
            "fgsm_rs[alpha=1.5eps,gradalign=0.2]:total",
        ),
        (["defense=adv_train"], "adv_train:pgd-total"),
        (["defense=dgba/adv_train"], "adv_train:pgd-dgba"),
        (["defense=adv_train_adv_only"], "adv_train[adv_only]:pgd-total"),
        (["defense=dgba/adv_train_adv_only"], "adv_train[adv_only]:pgd-dgba"),
        (["defense=adv_train", "defense.mode=mixed"], "adv_train[mixed=0.5]:pgd-total"),
        (["defense=fgsm_rs_gradalign"], "fgsm_rs[gradalign=0.2]:total"),
        (["defense=n_fgsm", "+defense.craft=train"], "n_fgsm[craft=train]:total"),
        (["defense=fgsm_rs", "+defense.craft=eval"], "fgsm_rs:total"),
    ],
)
def test_rows_name_each_defense_and_its_non_default_settings(compose, overrides, name) -> None:
    cfg = compose(overrides)
    assert defense_name(OmegaConf.to_container(cfg.defense, resolve=True)) == name


def test_non_default_step_is_named() -> None:
    assert parse_fast_at({"name": "fgsm_rs", "alpha": "8/255"}).describe() == "fgsm_rs[alpha=1eps]:total"
    assert parse_fast_at({"name": "n_fgsm", "eps": "4/255"}).describe() == "n_fgsm[eps=4/255]:total"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["defense=fgsm_rs", "defense.alpha=0"], "defense.alpha"),
        (["defense=n_fgsm", "defense.alpha=-1/255"], "defense.alpha"),
        (["defense=free_at", "defense.replays=0"], "defense.replays"),
        (["defense=free_at", "defense.replays=1.5"], "defense.replays"),
        (["defense=n_fgsm", "defense.noise=-1"], "defense.noise"),
        (["defense=fgsm_rs", "defense.grad_align=-0.1"], "grad_align"),
        (["defense=fgsm_rs", "defense.eps=0"], "defense.eps"),
        (["defense=fgsm_rs", "defense.name=fgsm_fast"], "unknown defense 'fgsm_fast'"),
        (["defense=fgsm_rs", "+defense.replays=2"], "does not take"),
        (["defense=fgsm_rs", "defense.direction.name=single", "+defense.direction.task=edges"], "edges"),
        (["defense=fgsm_rs", "defense.direction.name=diagonal"], "unknown attack direction"),
        (["defense=fgsm_rs", "+defense.craft=test"], "defense.craft must be one of"),
        (["defense=free_at", "+defense.craft=eval"], "free_at does not take craft"),
        (["defense=fgsm_rs", "+defense.attack_losses={seg: segpgd}"], "does not take attack_losses"),
        (["defense=fgsm_rs", "defense.grad_align=0.2", "defense.direction.name=sign_sum"], "GradAlign"),
    ],
)
def test_bad_defense_configs_fail_before_training(compose, overrides, message) -> None:
    cfg = compose(["experiment=smoke", *overrides])
    with pytest.raises(ValueError, match=message):
        build_module(cfg, instantiate(cfg.data))


def test_free_at_runs_epochs_divided_by_replays() -> None:
    assert training_epochs({"name": "free_at", "replays": 4}, 10) == 3
    assert training_epochs({"name": "free_at", "replays": 4}, 2) == 1
    assert training_epochs({"name": "fgsm_rs"}, 10) == 10
    assert training_epochs({"name": "adv_train"}, 10) == 10
    assert training_epochs(None, 10) == 10


def test_fgsm_rs_stays_in_the_ball_and_n_fgsm_does_not(compose) -> None:
    module, x, targets, _ = module_and_batch(compose, ["defense=fgsm_rs"])
    fgsm_rs = module.fast_at
    torch.manual_seed(0)
    x_adv = fgsm_rs.single_step_example(module.model, module.tasks, x, targets)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    # A step of 1.25 eps from a uniform start ends on the ball's faces for most pixels.
    assert ((x_adv - x).abs() > EPS - 1e-6).float().mean() > 0.3

    n_fgsm = FastAdversarialTraining(parse_fast_at({"name": "n_fgsm"}), module.tasks, module.loss_weights)
    x_adv = n_fgsm.single_step_example(module.model, module.tasks, x, targets)
    gap = (x_adv - x).abs()
    assert gap.max() > EPS + 1e-3, "N-FGSM is not clipped to the eps-ball"
    assert gap.max() <= 3 * EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("direction", ["total", "dgba", "single:seg"])
def test_n_fgsm_without_noise_is_fgsm(compose, direction: str) -> None:
    module, x, targets, _ = module_and_batch(compose, [])
    module.model.train()
    spec = {"name": "n_fgsm", "noise": 0, "direction": direction}
    fast = FastAdversarialTraining(parse_fast_at(spec), module.tasks, module.loss_weights)
    ours = fast.single_step_example(module.model, module.tasks, x, targets)
    reference = FGSM(EPS, direction=direction)(module.model, x, targets, module.tasks)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert module.model.training, "train mode comes back after crafting"


@pytest.mark.parametrize("direction", ["total", "dgba"])
def test_free_at_moves_delta_along_the_direction_of_the_training_forward(compose, direction: str) -> None:
    """First replay from delta = 0: delta = eps * sign(g), g the direction's input gradient at x in train
    mode with the pre-step weights (TOTAL: taken from the weights' own backward)."""
    module, x, targets, _ = module_and_batch(
        compose, ["defense=free_at", f"defense.direction.name={direction}"]
    )
    module.model.train()
    fast = FastAdversarialTraining(
        parse_fast_at({"name": "free_at", "replays": 1, "direction": direction}),
        module.tasks,
        module.loss_weights,
    )
    assert fast.shared_backward == (direction == "total")
    reference_model = copy.deepcopy(module.model)
    x_leaf = x.clone().requires_grad_(True)
    preds = reference_model(x_leaf)
    losses = {t: task.loss(preds[t], targets[t]) for t, task in module.tasks.items()}
    objective = fast.direction.objective(
        losses, {t: torch.ones(len(x), dtype=torch.bool) for t in losses}, None
    )
    (grad,) = torch.autograd.grad(objective.sum(), x_leaf)
    expected = (x + EPS * grad.sign()).clamp(0, 1) - x

    losses_seen: list[float] = []
    fast.step(module.model, module.tasks, x, targets, sgd_step(module, losses_seen))
    assert len(losses_seen) == 1
    agree = torch.isclose(fast.delta, expected, atol=1e-6).float().mean()
    assert agree > 0.999


def test_free_at_carries_delta_and_takes_one_step_per_replay(compose) -> None:
    module, x, targets, _ = module_and_batch(compose, ["defense=free_at", "defense.replays=3"])
    losses_seen: list[float] = []
    step = sgd_step(module, losses_seen)
    module.fast_at.step(module.model, module.tasks, x, targets, step)
    first = module.fast_at.delta.clone()
    assert len(losses_seen) == 3
    assert first.abs().max() <= EPS + 1e-6 and first.abs().max() > 0
    assert (x + first).min() >= 0 and (x + first).max() <= 1
    module.fast_at.step(module.model, module.tasks, x, targets, step)
    assert len(losses_seen) == 6 and not torch.equal(module.fast_at.delta, first)
    # a batch of another size starts from zero instead of a perturbation that does not fit
    module.fast_at.step(module.model, module.tasks, x[:2], {t: v[:2] for t, v in targets.items()}, step)
    assert module.fast_at.delta.shape == x[:2].shape


def test_grad_align_penalty_is_a_bounded_differentiable_regulariser(compose) -> None:
    module, x, targets, _ = module_and_batch(compose, ["defense=dgba/fgsm_rs", "defense.grad_align=0.5"])
    module.model.train()
    penalty = module.fast_at.grad_align_penalty(module.model, module.tasks, x, targets)
    assert 0.0 <= float(penalty.detach()) <= 2 * 0.5
    params = [p for p in module.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reaches the weights"


# FGSM-RS, N-FGSM and Free AT with TOTAL are counted in the study's smoke test (tests/test_fast_at_study.py).
PASSES = [
    # (defense overrides, (forward, backward) passes per iteration, optimiser steps per iteration)
    (["defense=none"], (1, 1), 1),
    (["defense=adv_train", "defense.attack.steps=2"], (4, 4), 2),  # clean step, 2 PGD steps, adversarial step
    (["defense=dgba/free_at", "defense.replays=2"], (2, 4), 2),  # plus one input-only backward per replay
    (["defense=fgsm_rs", "defense.grad_align=0.2"], (4, 5), 1),  # 2 gradients, one twice-differentiated
]


@pytest.mark.parametrize(("overrides", "passes", "steps"), PASSES)
def test_checkpoints_record_counted_passes_and_their_defense(compose, overrides, passes, steps) -> None:
    cfg = compose(["experiment=smoke", "train.max_epochs=1", "+trainer.limit_train_batches=2", *overrides])
    result = train(cfg)
    restored = load_module(result.checkpoint)
    cost = restored.training_record()["cost"]
    assert cost["iterations"] == 2
    assert (cost["forward_passes"] / 2, cost["backward_passes"] / 2) == passes
    assert cost["optimizer_steps"] == 2 * steps
    assert cost["seconds"] > 0
    assert restored.hparams.defense == OmegaConf.to_container(cfg.defense, resolve=True)


def test_craft_train_crafts_with_the_training_forward(compose) -> None:
    """craft=train crafts with BatchNorm on the batch's statistics, craft=eval on the running ones; both
    give the model its modes back."""
    module, x, targets, _ = module_and_batch(compose, ["defense=n_fgsm", "defense.noise=0"])
    module.model.train()
    examples = {}
    for craft in ("eval", "train"):
        fast = FastAdversarialTraining(
            parse_fast_at({"name": "n_fgsm", "noise": 0, "craft": craft}), module.tasks, module.loss_weights
        )
        reference = copy.deepcopy(module.model).train(craft == "train")
        attack = FGSM(EPS)  # an FGSM step of eps from x in the reference's modes
        with torch.enable_grad():
            objective = attack.bind(reference, x, targets, module.tasks)
            expected = (x + EPS * objective(x, 0).grad.sign()).clamp(0, 1)
        examples[craft] = fast.single_step_example(module.model, module.tasks, x, targets)
        assert torch.isclose(examples[craft], expected, atol=1e-6).float().mean() > 0.999
        assert module.model.training
    assert not torch.equal(examples["eval"], examples["train"])
