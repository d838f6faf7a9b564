"""Attack ensemble: per-image worst case per selection rule, wins, memory, bad input, the config path."""

from __future__ import annotations

import pytest
import torch

from mtl_robust.attacks import FGSM, PGD, Ensemble
from mtl_robust.attacks.config import ensemble_from_config
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.scores import joint_change, per_image_change, per_image_metrics
from mtl_robust.tasks import build_tasks
from tests.attack_stubs import SEG_CLASSES, TreeStub, make_batch

torch.set_num_threads(1)


def real_tasks():
    return build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)


def members():
    return {
        "pgd-seg": PGD(8 / 255, steps=2, direction="single:seg"),
        "pgd-depth": PGD(8 / 255, steps=2, direction="single:depth"),
        "fgsm-total": FGSM(8 / 255, direction="total"),
    }


def scores_of(model, tasks, x, x_adv, targets):
    with eval_mode(model), torch.no_grad():
        clean = per_image_metrics(tasks, model(x), targets)
        adv = per_image_metrics(tasks, model(x_adv), targets)
    change = per_image_change(clean, adv, {t: task.higher_is_better for t, task in tasks.items()})
    return change, joint_change(change)


def test_each_rule_keeps_the_per_image_worst_member():
    model, tasks = TreeStub(), real_tasks()
    x, targets = make_batch(n=4, h=6, w=6, seed=3)
    rules = ["joint", "task:seg", "task:depth"]
    ensemble = Ensemble(members(), rules=rules)
    result = ensemble.run(model, x, targets, tasks)
    # Reference: every member's x_adv scored separately; per image the minimum must be what was selected.
    per_member = {}
    for name, attack in members().items():
        x_adv = attack(model, x, targets, tasks)
        change, joint = scores_of(model, tasks, x, x_adv, targets)
        per_member[name] = {"joint": joint, "task:seg": change["seg"], "task:depth": change["depth"]}
    names = list(members())
    for rule in rules:
        table = torch.stack([per_member[m][rule].nan_to_num(float("inf")) for m in names])
        assert torch.equal(result.winners[rule], table.argmin(dim=0))
        _, joint = scores_of(model, tasks, x, result.x_adv[rule], targets)
        change, _ = scores_of(model, tasks, x, result.x_adv[rule], targets)
        chosen = joint if rule == "joint" else change[rule.split(":")[1]]
        assert torch.allclose(chosen, table.min(dim=0).values.to(chosen.dtype), atol=1e-9)
        assert (result.x_adv[rule] - x).abs().max() <= 8 / 255 + 1e-6
        assert result.x_adv[rule].min() >= 0 and result.x_adv[rule].max() <= 1


def test_ensemble_keeps_modes_and_parameters():
    model, tasks = TreeStub(), real_tasks()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, targets = make_batch(n=2, h=5, w=5)
    Ensemble(members()).run(model, x, targets, tasks)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bad_ensembles_fail_before_any_work():
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble({})
    with pytest.raises(ValueError, match="selection rule"):
        Ensemble(members(), rules=["worst"])
    with pytest.raises(ValueError, match="share one eps"):
        Ensemble({"a": FGSM(4 / 255), "b": FGSM(8 / 255)})
    model = TreeStub()
    model.calls.clear()
    x, targets = make_batch(n=2, h=5, w=5)
    with pytest.raises(ValueError, match="unknown task 'edges'"):
        Ensemble(members(), rules=["task:edges"]).run(model, x, targets, real_tasks())
    assert model.calls == []  # no forward pass happened
    with pytest.raises(ValueError, match="member 'x'.*unknown attack method"):
        ensemble_from_config({"method": "ensemble", "eps": "8/255", "members": {"x": {"method": "pgdd"}}})
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_from_config({"method": "ensemble", "eps": "8/255", "members": {}})
    with pytest.raises(ValueError, match="unknown task"):
        ensemble_from_config(
            {
                "method": "ensemble",
                "eps": "8/255",
                "rules": ["task:sky"],
                "members": {"a": {"method": "fgsm"}},
            },
            ["seg", "depth"],
        )


def test_config_expands_single_members_and_task_rules():
    cfg = {
        "method": "ensemble",
        "eps": "4/255",
        "rules": ["joint", "task"],
        "members": {
            "pgd-single": {"method": "pgd", "steps": 2, "direction": "single"},
            "pgd-minmax": {"method": "pgd", "steps": 2, "direction": "minmax"},
            "pgd-segpgd": {
                "method": "pgd",
                "steps": 2,
                "direction": "total",
                "attack_losses": {"seg": "segpgd"},
            },
        },
    }
    ensemble = ensemble_from_config(cfg, ["seg", "depth"])
    assert ensemble.names == ["pgd-single:seg", "pgd-single:depth", "pgd-minmax", "pgd-segpgd"]
    assert ensemble.rules == ["joint", "task:seg", "task:depth"]
    assert ensemble.eps == pytest.approx(4 / 255)


def test_memory_holds_one_selection_per_rule():
    """Earlier members' x_adv are released: only the selections per rule and the current member live."""
    import gc
    import weakref

    model, tasks = TreeStub(), real_tasks()
    x, targets = make_batch(n=2, h=5, w=5)
    ensemble = Ensemble({f"m{i}": PGD(8 / 255, steps=1) for i in range(4)}, rules=["joint", "task:seg"])
    refs: list = []
    alive_before_each: list[int] = []

    def on_member(name, x_adv, preds):
        gc.collect()
        alive_before_each.append(sum(r() is not None for r in refs))
        refs.append(weakref.ref(x_adv))

    ensemble.run(model, x, targets, tasks, on_member=on_member)
    assert alive_before_each == [0, 0, 0, 0]
