"""The analytic work of a model: forward FLOPs per fine block and per head, counted once per (backbone,
tasks, resolution) on the meta device (no weights, no data), and the memory traffic per FLOP. A layout's
work is then a sum: each fine block once per branch the layout gives it, each head once. A backward to the
input costs the forward's FLOPs, a training backward (input and weights) twice them (checked in the tests
against the counter on whole models)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from mtl_robust.models import build_model
from mtl_robust.models.layout import resolve_layout

# Counted on one image: the per-image work of every layer is the same at any batch size.
BACKWARD_FLOPS = 1.0  # an input-gradient backward, in forwards
TRAIN_BACKWARD_FLOPS = 2.0  # a backward to the input and the weights, in forwards


@dataclass(frozen=True)
class ModelWork:
    """Per-image forward FLOPs of each fine block (one branch) and of each task's head, the FLOPs outside
    them (input normalisation, upsampling), and the bytes of tensors read and written per FLOP."""

    block_flops: tuple[float, ...]
    head_flops: Mapping[str, float]
    other_flops: float
    bytes_per_flop: float
    coarse_groups: tuple[tuple[int, ...], ...]

    def forward_flops(self, layout: Any) -> float:
        """Forward FLOPs per image of `layout` (anything `resolve_layout` takes) over these tasks."""
        tasks = tuple(self.head_flops)
        groups = resolve_layout(layout, tasks, len(self.coarse_groups)).fine_state(self.coarse_groups)
        blocks = sum(len(g) * flops for g, flops in zip(groups, self.block_flops))
        return blocks + sum(self.head_flops.values()) + self.other_flops

    def to_json(self) -> dict[str, Any]:
        return {
            "block_flops": list(self.block_flops),
            "head_flops": dict(self.head_flops),
            "other_flops": self.other_flops,
            "bytes_per_flop": self.bytes_per_flop,
            "coarse_groups": [list(g) for g in self.coarse_groups],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelWork:
        return cls(
            tuple(data["block_flops"]),
            dict(data["head_flops"]),
            float(data["other_flops"]),
            float(data["bytes_per_flop"]),
            tuple(tuple(g) for g in data["coarse_groups"]),
        )


class _Traffic(TorchDispatchMode):
    """Bytes of every tensor an operator reads or writes (a roofline's memory term; caches ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
        return out


def count_model_work(
    model_cfg: Mapping[str, Any], tasks: Mapping[str, int], height: int, width: int
) -> ModelWork:
    """Count the forward of the model with one branch per task at every block (every block exists), on
    the meta device, one image, attributing FLOPs to the modules that run them."""
    with torch.device("meta"):
        model = build_model(**{**dict(model_cfg), "tasks": dict(tasks), "layout": "independent"})
    x = torch.empty(1, 3, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    traffic = _Traffic()
    with torch.no_grad(), counter, traffic:
        model(x)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total = float(counter.get_total_flops())
    n_tasks = len(tasks)
    blocks = tuple(
        sum(per_module.get(f"MultiTaskModel.branches.{f}.{g}", 0) for g in range(len(branch))) / n_tasks
        for f, branch in enumerate(model.branches)
    )
    heads = {t: float(per_module.get(f"MultiTaskModel.heads.{t}", 0)) for t in tasks}
    other = max(0.0, total - n_tasks * sum(blocks) - sum(heads.values()))
    return ModelWork(
        blocks,
        heads,
        other,
        traffic.bytes / max(total, 1.0),
        tuple(tuple(g) for g in model.coarse_groups),
    )
