"""Multi-task methods (the `mtl` group): every method trains with every layout kind and defense, an
aggregator's update is torchjd's, checkpoints reload with their method and weights, `ew` changes no key."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import nn

from mtl_robust.jobs.recipe import training_parts
from mtl_robust.jobs.train import build_module
from mtl_robust.lightning.module import load_module
from mtl_robust.mtl import AGGREGATORS, METHODS, WEIGHTINGS, build_method

LAYOUTS = ("all_shared", "branch_at_2", "independent")
DEFENSES = {
    "clean": ["defense=none"],
    "pgd_at": ["defense=adv_train", "defense.attack.steps=1"],
    "fast_at": ["defense=fgsm_rs_gradalign"],
}
TRAINED = [m for m in METHODS if m != "static"]  # static needs its weights (its own test)
# Each method with every layout kind and every defense, and every layout with every defense (a Latin
# square: 3 runs per method). Every pair of the three axes meets; the triples are left to chance.
SQUARE = [
    (method, LAYOUTS[i], list(DEFENSES)[(i + n) % 3]) for n, method in enumerate(TRAINED) for i in range(3)
]


def fit_two_steps(compose, tmp_path, overrides: list[str]):
    import pytorch_lightning as pl

    # 16x16 images, 8 a batch: two steps exercise the method; the pixels add nothing but time
    cfg = compose(["experiment=smoke", "data.dataset.height=16", "data.dataset.width=16", *overrides])
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    trainer = pl.Trainer(
        limit_train_batches=2,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer.fit(module, datamodule=datamodule)
    moved = any(not torch.equal(b, p) for b, p in zip(before, module.model.parameters(), strict=True))
    return module, trainer, moved


def check_trains(compose, tmp_path, method: str, layout: str, defense: str) -> None:
    module, trainer, moved = fit_two_steps(
        compose, tmp_path, [f"mtl={method}", f"sharing={layout}", *DEFENSES[defense]]
    )
    assert moved, "two training steps left the weights where they were"
    assert module.training_cost.iterations == 2
    assert str(module.procedure).endswith("" if method == "ew" else f"+{method}")
    if method in AGGREGATORS and layout != "independent":
        assert module.mtl_method.last_weights, "the aggregator combined no shared block"
    if method in AGGREGATORS and layout == "independent":
        assert not module.mtl_method.last_weights, "an independent model has no block to aggregate"


@pytest.mark.parametrize(("method", "layout", "defense"), SQUARE)
def test_every_method_trains_with_every_layout_and_defense(
    compose, tmp_path, method, layout, defense
) -> None:
    check_trains(compose, tmp_path, method, layout, defense)


def test_the_square_covers_every_pairing() -> None:
    assert {(m, la) for m, la, _ in SQUARE} == {(m, la) for m in TRAINED for la in LAYOUTS}
    assert {(m, d) for m, _, d in SQUARE} == {(m, d) for m in TRAINED for d in DEFENSES}
    assert {(la, d) for _, la, d in SQUARE} == {(la, d) for la in LAYOUTS for d in DEFENSES}


def test_static_takes_its_weights_from_the_mtl_group_only(compose, tmp_path) -> None:
    module, _, moved = fit_two_steps(
        compose, tmp_path, ["mtl=static", "mtl.weights={seg: 1, normal: 2, depth: 0.5}", "defense=fgsm_rs"]
    )
    assert moved and module.loss_weights == {"seg": 1.0, "normal": 2.0, "depth": 0.5}
    assert module.fast_at.loss_weights == module.loss_weights
    cfg = compose(["experiment=smoke", "mtl=static"])
    with pytest.raises(ValueError, match="mtl=static needs one weight per task"):
        build_module(cfg, instantiate(cfg.data))
    cfg = compose(["experiment=smoke", "mtl=static", "mtl.weights={seg: 1, normal: 1, depth: 1}"])
    with open_dict(cfg):
        cfg.train.loss_weights = {"seg": 2.0}
    with pytest.raises(ValueError, match="train.loss_weights must stay null"):
        build_module(cfg, instantiate(cfg.data))


def test_a_bad_method_or_setting_is_one_clear_error(compose) -> None:
    cfg = compose(["experiment=smoke", "mtl=cagrad", "mtl.c=-1"])
    with pytest.raises(ValueError, match="mtl=cagrad: torchjd's CAGrad refuses"):
        build_module(cfg, instantiate(cfg.data))
    with pytest.raises(ValueError, match="unknown multi-task method mtl='gradnorm'"):
        build_method("gradnorm", {}, ["a", "b"], {"a": 1.0, "b": 1.0})


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Sequential(nn.Linear(5, 4), nn.Tanh())
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1), "c": nn.Linear(4, 1)})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.shared(x)
        return features, {t: (head(features) ** 2).mean() for t, head in self.heads.items()}


@pytest.mark.parametrize("method", ["upgrad", "mgda", "pcgrad", "cagrad"])
def test_an_aggregators_update_is_torchjds_own(method) -> None:
    """The shared block gets torchjd's aggregation of the task gradients, each head its task's gradient:
    what torchjd's mtl_backward + jac_to_grad give on a shared trunk with heads."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    weights = {"a": 1.0, "b": 2.0, "c": 0.5}
    options = {"c": 0.4} if method == "cagrad" else {}
    ours, theirs = TwoHeads(), TwoHeads()

    _, losses = ours(x)
    build_method(method, options, list(weights), weights).aggregate_backward(losses, list(ours.parameters()))

    features, losses = theirs(x)
    aggregator = build_method(method, options, list(weights), weights)._aggregator(tuple(weights))
    mtl_backward([weights[t] * losses[t] for t in weights], features=features)
    jac_to_grad(list(theirs.shared.parameters()), aggregator)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


@pytest.mark.parametrize("method", ["uw", "dwa", "nash_mtl"])
def test_checkpoints_reload_with_their_method_and_final_weights(compose, tmp_path, method) -> None:
    module, trainer, _ = fit_two_steps(compose, tmp_path, [f"mtl={method}", "sharing=branch_at_2"])
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    restored = load_module(path)
    assert str(restored.procedure) == f"none+{method}"
    assert restored.mtl_method.weights() == module.mtl_method.weights()  # learned, dynamic or per block
    stored = torch.load(path, map_location="cpu", weights_only=True)["mtl"]
    assert stored["name"] == method and stored["weights"]
    if method == "uw":  # learned: the log-variances moved and are in the state dict
        assert "mtl_method.scalarizer.log_var" in restored.state_dict()
        assert any(w != 0.5 for w in restored.mtl_method.weights().values())
    if method in WEIGHTINGS:
        assert set(stored["weights"]) == set(restored.tasks)


def test_ew_adds_nothing_to_keys_hyper_parameters_or_state(compose) -> None:
    """Checked once against the code before the mtl group (training keys and recipes identical for the
    train and pipeline configs); here: `ew` contributes nothing a key, a checkpoint or a row reads."""
    cfg = compose(["experiment=smoke", "defense=fgsm_rs"])
    parts = training_parts(cfg)
    assert "mtl" not in parts
    with open_dict(cfg):
        del cfg["mtl"]
    assert training_parts(cfg) == parts
    module = build_module(cfg, instantiate(cfg.data))
    assert module.hparams["mtl"] is None and str(module.procedure) == "fgsm_rs:total"
    assert not any(k.startswith("mtl") for k in module.state_dict())
    pcgrad = compose(["experiment=smoke", "defense=fgsm_rs", "mtl=pcgrad"])
    assert training_parts(pcgrad)["mtl"] == {"name": "pcgrad"}


def test_the_planner_counts_an_aggregators_backward_per_task(compose) -> None:
    from mtl_robust.planning.cost import Work, defense_work

    plain = defense_work(compose(["defense=adv_train"]), 3)
    for method in ("uw", "ew"):
        assert defense_work(compose(["defense=adv_train", f"mtl={method}"]), 3) == plain
    pcgrad = defense_work(compose(["defense=adv_train", "mtl=pcgrad"]), 3)
    assert pcgrad == plain + Work(backwards=2 * 2)  # two optimiser steps, two extra backwards each
