"""Tiny stand-ins for the models and task layers, for the attack tests only.

`TreeStub` is a multi-task tree: a shared stem (conv + eval-mode BatchNorm with non-trivial running
statistics), a block shared by seg and normal, a block of its own for depth, and one head per task (the seg
head has Dropout, so a forgotten eval mode shows). It records which tasks each call asked for.
The stub tasks follow the Task contract: per-sample mean over valid pixels, 0 where none is valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SEG_CLASSES = 4
IGNORE = 255


def _block(cin: int, cout: int, bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class TreeStub(nn.Module):
    tasks = ("seg", "normal", "depth")

    def __init__(self, seed: int = 0, width: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.stem = _block(3, width)
        self.seg_normal = _block(width, width)
        self.depth_block = _block(width, width, bn=False)
        self.heads = nn.ModuleDict(
            {
                "seg": nn.Sequential(nn.Dropout(0.5), nn.Conv2d(width, SEG_CLASSES, 1)),
                "normal": nn.Conv2d(width, 3, 1),
                "depth": nn.Conv2d(width, 1, 1),
            }
        )
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                    m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        self.calls: list[tuple[str, ...]] = []

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        tasks = tuple(self.tasks if tasks is None else tasks)
        self.calls.append(tasks)
        shared = self.stem(x)
        out = {}
        if "seg" in tasks or "normal" in tasks:
            branch = self.seg_normal(shared)
            for t in ("seg", "normal"):
                if t in tasks:
                    out[t] = self.heads[t](branch)
        if "depth" in tasks:
            out["depth"] = self.heads["depth"](self.depth_block(shared))
        return out


def _sample_mean(values: Tensor, valid: Tensor) -> Tensor:
    w = valid.float()
    return (torch.where(valid, values, torch.zeros_like(values)) * w).flatten(1).sum(1) / w.flatten(1).sum(
        1
    ).clamp_min(1.0)


class StubTask:
    name = ""

    def valid_count(self, target: Tensor) -> Tensor:
        return self.valid_mask(target).flatten(1).sum(1)


class SegStub(StubTask):
    name = "seg"

    def valid_mask(self, target: Tensor) -> Tensor:
        return target != IGNORE

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = self.valid_mask(target)
        ce = F.cross_entropy(pred, torch.where(valid, target, torch.zeros_like(target)), reduction="none")
        return _sample_mean(ce, valid)


class NormalStub(StubTask):
    name = "normal"

    def valid_mask(self, target: Tensor) -> Tensor:
        return (target != 0).any(dim=1)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        cos = (F.normalize(pred, dim=1) * target).sum(dim=1)
        return _sample_mean(1.0 - cos, self.valid_mask(target))


class DepthStub(StubTask):
    name = "depth"

    def valid_mask(self, target: Tensor) -> Tensor:
        return target[:, 0] > 0

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return _sample_mean((pred - target).abs()[:, 0], self.valid_mask(target))


def stub_tasks() -> dict[str, StubTask]:
    return {"seg": SegStub(), "normal": NormalStub(), "depth": DepthStub()}


def stub_losses() -> dict[str, object]:
    """Bound `task.loss` methods, the way the evaluation layer passes them."""
    return {name: task.loss for name, task in stub_tasks().items()}


def make_batch(n: int = 2, h: int = 6, w: int = 6, seed: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
    """x in [0, 1] and targets with some invalid pixels (seg 255, all-zero normals, zero depth)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=gen)
    seg = torch.randint(0, SEG_CLASSES, (n, h, w), generator=gen)
    seg[:, 0, :] = IGNORE
    normal = F.normalize(torch.randn(n, 3, h, w, generator=gen), dim=1)
    normal[:, :, :, 0] = 0.0
    depth = torch.rand(n, 1, h, w, generator=gen) + 0.5
    depth[:, :, -1, :] = 0.0
    return x, {"seg": seg, "normal": normal, "depth": depth}


class LinearToy(nn.Module):
    """model(x)["a"] = x; with `mean_loss` the objective is the mean pixel value (gradient sign +1)."""

    tasks = ("a",)

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        return {"a": x * 1.0}


def mean_loss(pred: Tensor, target: Tensor) -> Tensor:
    return pred.flatten(1).mean(1)
