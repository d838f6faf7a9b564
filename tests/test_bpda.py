"""BPDA (`model_bpda`): a named non-differentiable input transform keeps its forward value and passes the
gradient straight through, so the quantised model of the diagnostics test is no longer masked; the wrapper
leaves the model as it was; unknown names and shape-changing targets fail with one clear error."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mtl_robust.attacks.bpda import check_bpda, parse_bpda, with_bpda
from mtl_robust.attacks.config import attack_from_config
from mtl_robust.attacks.model_call import MultiTaskAdapter, forward_tasks
from mtl_robust.evaluation.diagnostics import diagnose
from mtl_robust.tasks import build_tasks
from tests.attack_stubs import SEG_CLASSES, TreeStub, make_batch, stub_tasks
from tests.conftest import run_entry_point
from tests.test_diagnostics import Quantised

torch.set_num_threads(1)
EPS = 8 / 255


def input_gradient(model: nn.Module, x: torch.Tensor, targets) -> torch.Tensor:
    attack = attack_from_config({"method": "fgsm", "eps": EPS}, "total")
    return attack.linear_objective(model, x, targets, stub_tasks())[1]


def test_the_gradient_is_the_networks_at_the_quantised_point() -> None:
    x, targets = make_batch(n=2, h=6, w=6, seed=1)
    masked = Quantised(TreeStub(width=4))
    assert input_gradient(masked, x, targets).abs().max() == 0  # the masking BPDA is for
    through = with_bpda(masked, ["quantise"])
    expected = input_gradient(masked.inner, masked.quantise(x), targets)
    torch.testing.assert_close(input_gradient(through, x, targets), expected)
    with torch.no_grad():  # forward values are the model's, bit for bit
        plain, wrapped = forward_tasks(masked.eval(), x), forward_tasks(through, x)
    assert all(torch.equal(plain[t], wrapped[t]) for t in plain)


def test_bpda_unmasks_the_quantised_model_in_the_diagnostics() -> None:
    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)
    batch = make_batch(n=4, h=6, w=6, seed=1)
    masked = MultiTaskAdapter(Quantised(TreeStub()), task_names=["seg", "normal", "depth"])
    report = diagnose(with_bpda(masked, ["quantise"]), tasks, lambda: [batch], eps=8 / 255, steps=2)
    assert not any(f.startswith("zero_input_gradients") for f in report.flags)
    assert report.measures["pgd"] < 0  # the attack moves and hurts, where without BPDA it measures 0


def test_the_model_is_left_as_it_was() -> None:
    model = Quantised(TreeStub(width=4))
    model.inner.heads["seg"].train()
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, targets = make_batch(n=2, h=6, w=6, seed=1)
    attack = attack_from_config({"method": "pgd", "eps": EPS, "steps": 2}, "dgba")
    attack(with_bpda(model, ["quantise"]), x, targets, stub_tasks())
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())  # no straight-through left behind
    assert all(p.grad is None for p in model.parameters())


def test_unknown_names_and_shape_changing_targets_fail_clearly() -> None:
    model = MultiTaskAdapter(Quantised(TreeStub(width=4)), task_names=["seg", "normal", "depth"])
    with pytest.raises(ValueError, match="no submodule 'quantiser'.*'quantise'"):
        with_bpda(model, ["quantiser"])
    x, _ = make_batch(n=1, h=6, w=6, seed=1)
    with pytest.raises(ValueError, match=r"'inner.stem' maps its input \(1, 3, 6, 6\) to \(1, 4, 6, 6\)"):
        check_bpda(with_bpda(model, ["inner.stem"]), x)
    assert parse_bpda(None) == () and parse_bpda("quantise") == ("quantise",)
    with pytest.raises(ValueError, match="twice"):
        parse_bpda(["quantise", "quantise"])


class QuantisedForeignNet(nn.Module):
    """A user's model with a quantiser in front (plain forward(x), dict output)."""

    def __init__(self, classes: int = 8) -> None:
        super().__init__()
        from tests.test_diagnostics import Quantiser
        from tests.test_foreign_model import ForeignNet

        self.quantise = Quantiser(8)
        self.net = ForeignNet(classes=classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(self.quantise(x))


@pytest.mark.slow
def test_the_attack_job_records_bpda_and_eot(tmp_path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "net.pt"
    torch.save(QuantisedForeignNet().state_dict(), weights)
    common = [
        "model={_target_: tests.test_bpda.QuantisedForeignNet, classes: 8}",
        f"model_weights={weights}",
        "attack=pgd",
        "attack.steps=2",
        "attack.eot_samples=2",
        "data.dataset.height=16",
        "data.dataset.width=16",
        "data.splits.val.num_images=4",
        "eval.batch_size=4",
        "eval.progress=false",
        "eval.examples=0",
    ]
    proc = run_entry_point("mtl_robust.attack", [*common, "model_bpda=[quantise]"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "logs/results/default.jsonl"
    row = json.loads(store.read_text().splitlines()[-1])
    assert row["status"] == "ok" and row["results"]["rel_avg"] < 0  # the quantiser no longer masks
    assert row["config"]["bpda"] == ["quantise"] and row["config"]["eot_samples"] == 2
