"""Catastrophic-overfitting watch: the collapse rule, and what it does to a training run when it fires."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mtl_robust.jobs.train import train
from mtl_robust.lightning.co_watch import CatastrophicOverfittingWatch, CollapseDetector
from mtl_robust.lightning.module import load_module


def test_collapse_means_pgd_falls_while_fgsm_stays_up() -> None:
    detector = CollapseDetector(drop=0.3)
    assert not detector.update(0.50, 0.40)  # first check: nothing to compare with
    assert not detector.update(0.60, 0.45)
    assert not detector.update(0.62, 0.33), "a 27% fall of PGD robustness is within drop=0.3"
    assert detector.update(0.70, 0.20), "PGD collapsed while FGSM robustness rose: catastrophic overfitting"
    both = CollapseDetector(drop=0.3)
    both.update(0.6, 0.5)
    assert not both.update(0.3, 0.2), "both attacks got stronger: the model got worse, not overfit to FGSM"


def test_a_model_learning_to_use_its_input_is_no_collapse() -> None:
    # An undefended model of the fast-AT study (checks every 16 steps): both robustness values fall together.
    learning = [(0.999, 0.999), (0.952, 0.948), (0.859, 0.832), (0.822, 0.774), (0.645, 0.536), (0.704, 0.65)]
    detector = CollapseDetector(drop=0.3)
    assert not any(detector.update(fgsm, pgd) for fgsm, pgd in learning)


def test_bad_watch_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="on_collapse"):
        CatastrophicOverfittingWatch(on_collapse="panic")
    with pytest.raises(ValueError, match="drop"):
        CatastrophicOverfittingWatch(drop=1.5)
    with pytest.raises(ValueError, match="every_n_steps"):
        CatastrophicOverfittingWatch(every_n_steps=0)


def test_the_watch_measures_real_attacks(compose) -> None:
    cfg = compose(
        ["experiment=smoke", "defense=dgba/fgsm_rs", "co_watch=enabled", "callbacks.co_watch.pgd_steps=2"]
    )
    from mtl_robust.jobs.train import build_module

    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    watch = instantiate(cfg.callbacks.co_watch)

    class FakeTrainer:
        pass

    trainer = FakeTrainer()
    trainer.datamodule = datamodule
    watch.on_fit_start(trainer, module)
    assert watch.pgd.direction.spec() == "dgba" and watch.pgd.eps == pytest.approx(8 / 255)
    before = [p.detach().clone() for p in module.parameters()]
    module.train()
    fgsm, pgd = watch.check(module)
    assert 0 < fgsm <= 1.0 + 1e-6 and 0 < pgd <= 1.0 + 1e-6
    assert module.training, "train mode comes back"
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("action", ["warn", "restore"])
def test_a_collapse_warns_and_restore_brings_back_the_best_weights(compose, monkeypatch, action: str) -> None:
    # Scripted robustness values: the third check collapses (PGD 0.8 -> 0.2 while FGSM stays at 0.9).
    script = iter([(0.9, 0.7), (0.9, 0.8), (0.9, 0.2), (0.9, 0.1)])
    weights_at_check: list[dict[str, torch.Tensor]] = []

    def scripted_check(self, pl_module):
        weights_at_check.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})
        return next(script)

    monkeypatch.setattr(CatastrophicOverfittingWatch, "check", scripted_check)
    cfg = compose(
        [
            "experiment=smoke",
            "defense=fgsm_rs",
            "co_watch=enabled",
            "callbacks.co_watch.every_n_steps=1",
            f"callbacks.co_watch.on_collapse={action}",
            "train.max_epochs=1",
        ]
    )
    with pytest.warns(
        UserWarning, match="catastrophic overfitting at step 3: PGD robustness fell from 0.800 to 0.200"
    ):
        result = train(cfg)
    restored = load_module(result.checkpoint)
    summary = restored.co_watch_summary
    assert summary["collapsed"] and summary["collapse_at"] == "step 3"
    final = restored.model.state_dict()
    if action == "restore":
        assert len(weights_at_check) == 3, "training stops at the collapse"
        assert summary["restored"] and summary["best_at"] == "step 2"
        assert all(torch.equal(final[k], weights_at_check[1][k]) for k in final if k in weights_at_check[1])
    else:
        assert len(weights_at_check) == 4 and not summary["restored"]
        assert not all(torch.equal(final[k], weights_at_check[1][k]) for k in final)
    assert restored.training_record()["co_watch"]["history"][2] == [0.9, 0.2]


def test_watched_settings_follow_the_defense_budget_in_either_unit() -> None:
    from mtl_robust.lightning.co_watch import watched_attack_settings

    attack = {"method": "pgd", "eps": None, "pixel_eps": 4}
    pixel = {"name": "adv_train", "attack": attack, "direction": "dgba"}
    assert watched_attack_settings(pixel) == (4 / 255, "dgba")
    plain = {"name": "adv_train", "attack": {"method": "pgd", "eps": "2/255"}, "direction": {"name": "total"}}
    assert watched_attack_settings(plain) == (2 / 255, "total")
    assert watched_attack_settings(None) == (8 / 255, "total")
    # a hand-built config that gives its budget as pixel_eps alone (no eps key at all)
    hand_built = {"name": "adv_train", "attack": {"method": "pgd", "pixel_eps": 4}, "direction": "total"}
    assert watched_attack_settings(hand_built) == (4 / 255, "total")
    fast = {"name": "free_at", "eps": "4/255", "direction": {"name": "sign_sum"}}
    assert watched_attack_settings(fast) == (4 / 255, "sign_sum")
