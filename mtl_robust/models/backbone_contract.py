"""The backbone contract every layout relies on: fine blocks run in order, grouped into exactly
`NUM_COARSE_BLOCKS` coarse blocks (the points where a layout may branch). Backbone builders
(`backbones.py`, `vit.py`) and the pretrained-weight loader build on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# Every layout (named, TreeMTL index, explicit) has one partition per coarse block, and the configs' layout
# indices count trees over exactly five blocks.
NUM_COARSE_BLOCKS = 5


class Backbone(nn.Module):
    """Fine blocks run in order; `coarse_groups[c]` lists the fine-block indices of coarse block c."""

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        coarse_groups: Sequence[Sequence[int]],
        out_channels: int,
        output_stride: int,
        name: str = "",
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.coarse_groups = [list(g) for g in coarse_groups]
        flat = [f for g in self.coarse_groups for f in g]
        if flat != list(range(len(self.blocks))):
            raise ValueError(
                f"coarse_groups {self.coarse_groups} must list the fine blocks 0..{len(self.blocks) - 1} "
                "in order, each exactly once"
            )
        if any(not g for g in self.coarse_groups):
            raise ValueError(f"every coarse block needs at least one fine block: {self.coarse_groups}")
        self.out_channels = int(out_channels)
        self.output_stride = int(output_stride)
        self.name = name

    @property
    def num_fine_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_coarse_blocks(self) -> int:
        return len(self.coarse_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def check_backbone(backbone: Any, name: str) -> Backbone:
    """`backbone` if it keeps the contract of this module's docstring; a ValueError naming `name` if not."""
    if not isinstance(backbone, Backbone):
        raise ValueError(
            f"backbone {name!r} must be a mtl_robust.models.Backbone (wrap its blocks with "
            f"Backbone(blocks, coarse_groups, out_channels, output_stride)); got {type(backbone).__name__}"
        )
    if backbone.num_coarse_blocks != NUM_COARSE_BLOCKS:
        raise ValueError(
            f"backbone {name!r} must provide {NUM_COARSE_BLOCKS} coarse blocks (stem + 4 stages) as "
            "coarse_groups, one list of fine-block indices per coarse block, since layouts branch between "
            f"them; got {backbone.num_coarse_blocks}: {backbone.coarse_groups}"
        )
    return backbone
