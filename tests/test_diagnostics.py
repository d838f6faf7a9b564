"""Gradient-masking diagnostics: a deliberately masked model (non-differentiable quantisation in front of
the network) is flagged; the same network without it is not flagged for zero gradients; rows carry flags."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl_robust.evaluation.diagnostics import diagnose
from mtl_robust.report.flags import FLAG_MARK, marked_layout
from mtl_robust.report.records import Record
from mtl_robust.tasks import build_tasks
from tests.attack_stubs import SEG_CLASSES, TreeStub, make_batch

torch.set_num_threads(1)


class Quantiser(nn.Module):
    """round(x * levels) / levels: its input gradient is exactly zero everywhere."""

    def __init__(self, levels: int = 8) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * self.levels) / self.levels


class Quantised(nn.Module):
    """The quantiser (submodule `quantise`, a BPDA target) before the network."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.quantise = Quantiser(8)
        self.inner = inner

    def forward(self, x: Tensor, tasks=None) -> dict[str, Tensor]:
        return self.inner(self.quantise(x), tasks=tasks)


def run(model: nn.Module):
    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)
    batch = make_batch(n=4, h=6, w=6, seed=1)
    return diagnose(model, tasks, lambda: [batch], eps=8 / 255, steps=2)


def test_masked_model_is_flagged():
    report = run(Quantised(TreeStub()))
    assert report.zero_grad_fraction == {"seg": 1.0, "normal": 1.0, "depth": 1.0}
    assert {"zero_input_gradients:seg", "zero_input_gradients:normal", "zero_input_gradients:depth"} <= set(
        report.flags
    )
    assert {f"large_eps_not_worst:{t}" for t in ("seg", "normal", "depth")} <= set(report.flags)
    assert report.measures["pgd"] == 0.0  # the attack cannot move: it sees no gradient


def test_differentiable_model_has_gradients():
    report = run(TreeStub())
    assert max(report.zero_grad_fraction.values()) < 0.5
    assert not any(f.startswith("zero_input_gradients") for f in report.flags)
    assert report.measures["pgd"] < 0  # the attack hurts


def test_flagged_models_are_marked_in_tables():
    def record(flags):
        return Record(
            "s", "k", "ok", 0.0, {"layout_name": "independent"}, {"diagnostics": {"flags": flags}}, "", None
        )

    assert marked_layout(record(["larger_eps_weaker"])) == f"independent {FLAG_MARK}"
    assert marked_layout(record([])) == "independent"
