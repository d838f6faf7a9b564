"""Adversarial training: the paper's recipe, its variants, and what the adversary sees."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mtl_robust.jobs.train import build_module, train
from mtl_robust.lightning.module import MultiTaskModule, defense_name


def module_with(compose, overrides: list[str]) -> tuple[MultiTaskModule, object]:
    cfg = compose(["experiment=smoke", "defense=adv_train", *overrides])
    datamodule = instantiate(cfg.data)
    return build_module(cfg, datamodule), cfg


def test_paper_recipe_is_the_default(compose) -> None:
    module, _ = module_with(compose, [])
    adversary = module.adversary
    assert module.defense_mode == "clean_then_adv"
    assert adversary.eps == pytest.approx(8 / 255) and adversary.steps == 10
    assert adversary.alpha == pytest.approx(8 / 255 / 10) and adversary.random_start is False
    assert defense_name(module.hparams.defense) == "adv_train:pgd-total"
    assert not module.automatic_optimization


@pytest.mark.parametrize(("mode", "steps_per_batch"), [("clean_then_adv", 2), ("adv_only", 1), ("mixed", 1)])
def test_optimizer_steps_and_adversary_contract(compose, mode: str, steps_per_batch: int) -> None:
    module, cfg = module_with(
        compose, [f"defense.mode={mode}", "defense.attack.steps=2", "defense.direction.name=dgba"]
    )
    seen = []
    real_adversary = module.adversary

    def spy(model, x, targets, losses):
        assert model.training, "the training loop hands over a model in train mode"
        x_adv = real_adversary(model, x, targets, losses)
        assert model.training, "the adversary must restore train mode"
        seen.append((x, x_adv))
        return x_adv

    module.adversary = spy
    cfg.trainer.max_epochs = 1
    cfg.train.max_epochs = 1
    datamodule = instantiate(cfg.data)
    trainer = instantiate(
        cfg.trainer, logger=False, enable_checkpointing=False, limit_val_batches=0, limit_train_batches=2
    )
    steps = []
    original_step = torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return original_step(self, *args, **kwargs)

    torch.optim.Adam.step = counting_step
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        torch.optim.Adam.step = original_step
    assert len(seen) == 2
    assert len(steps) == 2 * steps_per_batch
    for x, x_adv in seen:
        assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert not torch.equal(x, x_adv)


def test_defended_checkpoint_records_its_defense(compose) -> None:
    cfg = compose(["experiment=smoke", "defense=adv_train", "defense.attack.steps=1", "train.max_epochs=1"])
    result = train(cfg)
    restored = MultiTaskModule.load_from_checkpoint(str(result.checkpoint))
    assert defense_name(restored.hparams.defense) == "adv_train:pgd-total"
    assert restored.adversary is not None


def test_bad_defense_configs_are_rejected(compose) -> None:
    with pytest.raises(ValueError, match="defense.mode"):
        module_with(compose, ["defense.mode=sometimes"])
    with pytest.raises(ValueError, match="eps"):
        module_with(compose, ["defense.attack.eps=3"])
