"""Task heads: backbone features -> per-task prediction maps (at feature resolution or a small multiple).

Every head is built as ``HEADS[name](in_channels, out_channels, **kwargs)``. Heads keep PyTorch's default
initialisation (TreeMTL only re-initialises the backbone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .neck import DPTHead

__all__ = ["ASPPHead", "ASPPBranch", "LightHead", "DPTHead", "HEADS", "build_head"]


class ASPPBranch(nn.Module):
    """conv3x3 dilated (bias) -> ReLU -> Dropout -> conv1x1 -> ReLU -> Dropout -> conv1x1."""

    def __init__(self, cin: int, cout: int, rate: int, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=rate, dilation=rate, bias=True)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.conv3 = nn.Conv2d(hidden, cout, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.conv1(x)))
        x = self.dropout(F.relu(self.conv2(x)))
        return self.conv3(x)


class ASPPHead(nn.Module):
    """DeepLab-v2 ASPP as in TreeMTL: four dilated branches (rates 6, 12, 18, 24) whose outputs are summed."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 1024,
        rates: Sequence[int] = (6, 12, 18, 24),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if not rates:
            raise ValueError("ASPPHead needs at least one dilation rate")
        self.branches = nn.ModuleList(
            ASPPBranch(in_channels, out_channels, int(r), int(hidden), float(dropout)) for r in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class LightHead(nn.Module):
    """conv3x3-BN-ReLU, then `upsample_stages` x (bilinear x2, conv3x3-BN-ReLU), then conv1x1 -> out.

    Cheap on CPU; the optional upsampling stages let the head refine coarse (output stride 8) features.
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int = 64, upsample_stages: int = 0
    ) -> None:
        super().__init__()
        if upsample_stages < 0:
            raise ValueError(f"upsample_stages must be >= 0, got {upsample_stages}")
        self.stem = self._cbr(in_channels, hidden)
        self.up = nn.ModuleList(self._cbr(hidden, hidden) for _ in range(int(upsample_stages)))
        self.classifier = nn.Conv2d(hidden, out_channels, 1)

    @staticmethod
    def _cbr(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.up:
            x = stage(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return self.classifier(x)


# "dpt": a DPT-like neck per head, for the vision transformer's token maps (models/neck.py).
HEADS: dict[str, Callable[..., nn.Module]] = {"aspp": ASPPHead, "light": LightHead, "dpt": DPTHead}


def build_head(name: str, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; available: {sorted(HEADS)}")
    try:
        return HEADS[name](in_channels, out_channels, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments {kwargs} for head {name!r}: {err}") from err
