"""The `weighted` direction: TOTAL on the training weights. Its step is TOTAL's step on the w-weighted
losses under every norm; the attack job reads the weights from the model (static, learned/dynamic from the
checkpoint, an aggregator's last shared-block weights), rows carry them, and a model without weights is one
clear error."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mtl_robust.attacks import PGD, Total, Weighted, build_direction
from mtl_robust.attacks.config import attack_spec
from mtl_robust.jobs.attack import build_cells
from mtl_robust.jobs.train import build_module
from mtl_robust.lightning.module import load_module
from mtl_robust.mtl.attack_weights import NoTrainingWeights, training_weights
from mtl_robust.values.direction import DirectionSpec
from mtl_robust.values.norm import L1, L2, LINF
from tests.test_mtl_methods import fit_two_steps

STATIC = {"seg": 1.0, "normal": 2.0, "depth": 0.5}
STATIC_OVERRIDES = ["mtl=static", "mtl.weights={seg: 1, normal: 2, depth: 0.5}"]


def test_weighted_is_a_registered_direction_with_its_own_text_form() -> None:
    assert build_direction("weighted").spec() == "weighted"
    assert DirectionSpec.parse("weighted").label == "WEIGHTED"
    with pytest.raises(RuntimeError, match="read from its checkpoint by the attack job"):
        Weighted().objective({"a": torch.ones(2)}, {"a": torch.ones(2, dtype=torch.bool)}, None)
    with pytest.raises(ValueError, match="no weight for tasks \\['b'\\]"):
        Weighted({"a": 1.0}).objective(
            {"a": torch.ones(2), "b": torch.ones(2)}, {t: torch.ones(2, dtype=torch.bool) for t in "ab"}, None
        )


@pytest.mark.parametrize("norm", [LINF, L2, L1], ids=str)
def test_its_step_is_totals_step_on_the_weighted_losses_under_every_norm(norm) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 2, 4, 4, requires_grad=True)
    scale = {"a": torch.randn(2, 4, 4), "b": torch.randn(2, 4, 4)}
    losses = {t: (x * s).flatten(1).sum(1) + ((x * s) ** 2).flatten(1).mean(1) for t, s in scale.items()}
    valid = {"a": torch.tensor([True, False, True]), "b": torch.ones(3, dtype=torch.bool)}
    weights = {"a": 3.0, "b": 0.25}
    (ours,) = torch.autograd.grad(
        Weighted(weights).objective(losses, valid, None).sum(), x, retain_graph=True
    )
    weighted = {t: weights[t] * loss for t, loss in losses.items()}
    (theirs,) = torch.autograd.grad(Total().objective(weighted, valid, None).sum(), x, retain_graph=True)
    assert torch.allclose(ours, theirs)
    direction = Weighted(weights).for_norm(norm)
    assert torch.equal(direction.step(ours, norm), Total().step(theirs, norm))
    (plain,) = torch.autograd.grad(Total().objective(losses, valid, None).sum(), x)
    assert not torch.equal(Total().step(plain, norm), direction.step(ours, norm)), "weights changed nothing"


def test_on_a_static_weights_model_pgd_weighted_is_pgd_total_on_weighted_losses(compose, tmp_path) -> None:
    module, _, _ = fit_two_steps(compose, tmp_path, STATIC_OVERRIDES)
    assert training_weights(module) == (STATIC, "static")
    model = module.model.eval()
    batch = next(iter(instantiate(compose(["experiment=smoke", "data.dataset.height=16",
                                          "data.dataset.width=16"]).data).val_dataloader()))  # fmt: skip
    x, targets = batch[0][:4], {t: y[:4] for t, y in batch[1].items()}
    [cell] = build_cells(module, [attack_spec({"method": "pgd", "eps": 8 / 255, "steps": 3}, "weighted")])
    assert cell.config["direction"] == "weighted"
    assert cell.config["direction_weights"] == STATIC
    assert cell.config["direction_weights_source"] == "static"
    ours = cell.attack(model, x, targets)
    rescaled = {t: (lambda p, y, t=t: STATIC[t] * module.tasks[t].loss(p, y)) for t in module.tasks}
    theirs = PGD(eps=8 / 255, steps=3, direction="total", attack_losses=rescaled)(
        model, x, targets, module.tasks
    )
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("method", ["uw", "dwa"])
def test_learned_and_dynamic_weights_are_read_from_the_checkpoint(compose, tmp_path, method) -> None:
    _, trainer, _ = fit_two_steps(compose, tmp_path, [f"mtl={method}"])
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    stored = torch.load(path, map_location="cpu", weights_only=True)["mtl"]["weights"]
    weights, source = training_weights(load_module(path))
    assert source == "final"
    assert weights == pytest.approx(stored)


def test_an_aggregators_weights_are_its_mean_shared_block_weights(compose, tmp_path) -> None:
    module, trainer, _ = fit_two_steps(compose, tmp_path, ["mtl=pcgrad", "sharing=branch_at_2"])
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    restored = load_module(path)
    weights, source = training_weights(restored)
    block = "+".join(restored.tasks)
    assert source == "mean_over_training" and restored.mtl_method.weight_steps[block] == 2
    sums = module.mtl_method.weight_sums[block]
    assert weights == pytest.approx({t: w / 2 for t, w in sums.items()})
    restored.mtl_method.weight_sums, restored.mtl_method.weight_steps = {}, {}  # an older checkpoint
    assert training_weights(restored) == (restored.mtl_method.last_weights[block], "last_step")


def test_a_model_without_training_weights_is_one_clear_error(compose, tmp_path) -> None:
    independent, _, _ = fit_two_steps(compose, tmp_path, ["mtl=pcgrad", "sharing=independent"])
    with pytest.raises(NoTrainingWeights, match="no weights for a block shared by every task"):
        training_weights(independent)
    with pytest.raises(NoTrainingWeights, match="has no training weights; use direction=total"):
        training_weights(torch.nn.Linear(2, 2))
    spec = attack_spec({"method": "pgd", "eps": 8 / 255, "steps": 1}, "weighted")
    with pytest.raises(NoTrainingWeights):
        build_cells(independent, [spec])
    cfg = compose(["experiment=smoke"])
    ew = build_module(cfg, instantiate(cfg.data))
    [cell] = build_cells(ew, [spec])  # today's equal weights: weighted is TOTAL
    assert cell.config["direction_weights"] == {t: 1.0 for t in ew.tasks}


def test_the_planner_counts_it_as_total() -> None:
    """One backward per gradient after one forward, no clean-state forward: read from its class."""
    from mtl_robust.planning.cost import cell_work

    pgd = {"method": "pgd", "steps": 5, "eps": 8 / 255}
    assert cell_work(pgd, "weighted", ["seg", "depth"]) == cell_work(pgd, "total", ["seg", "depth"])
