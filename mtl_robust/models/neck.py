"""A DPT-like dense neck: tokens reassembled into a feature pyramid, fused coarse-to-fine, one per head.

DPT (Ranftl et al., 2021) taps four transformer layers, reassembles each into a map at 1/4, 1/8, 1/16 and
1/32 of the input, and fuses them from coarse to fine with residual convolution units and 2x upsampling.
The backbone contract hands a head only the last block's output, so here all four maps are reassembled
from that one token map (stride s = the patch size): a 1x1 projection per level, then a 4x transposed
convolution (s/4), a 2x one (s/2), nothing (s) or a stride-2 convolution (2s), then a 3x3 convolution to
`features` channels; fusion as in DPT, ending at s/8 (2 pixels for 16-pixel patches) before the head's
output convolutions; the model upsamples the prediction to the input size. Plain
convolutions and no BatchNorm (as DPT), so a head behaves the same in train and eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DPTNeck", "DPTHead"]


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """(coarser fused map, this level's map) -> refined map at twice this level's resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.skip = ResidualConvUnit(channels)
        self.refine = ResidualConvUnit(channels)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, level: Tensor, coarser: Tensor | None) -> Tensor:
        x = level
        if coarser is not None:
            x = x + self.skip(
                F.interpolate(coarser, size=level.shape[-2:], mode="bilinear", align_corners=False)
            )
        x = self.refine(x)
        return self.out(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


def _resample(channels: int, factor: float) -> nn.Module:
    if factor == 1:
        return nn.Identity()
    if factor > 1:
        k = int(factor)
        return nn.ConvTranspose2d(channels, channels, k, stride=k)
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


class DPTNeck(nn.Module):
    """Token map [N, C, h, w] -> fused features [N, features, 8h, 8w] (stride s/8 with 4 levels)."""

    def __init__(
        self,
        in_channels: int,
        features: int = 256,
        level_channels: Sequence[int] = (96, 192, 384, 768),
    ) -> None:
        super().__init__()
        if len(level_channels) != 4:
            raise ValueError(
                f"level_channels needs 4 entries (1/4, 1/8, 1/16, 1/32), got {list(level_channels)}"
            )
        factors = (4.0, 2.0, 1.0, 0.5)
        self.reassemble = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, c, 1),
                _resample(c, f),
                nn.Conv2d(c, features, 3, padding=1, bias=False),
            )
            for c, f in zip(level_channels, factors)
        )
        self.fusion = nn.ModuleList(FusionBlock(features) for _ in level_channels)

    def forward(self, x: Tensor) -> Tensor:
        levels = [r(x) for r in self.reassemble]
        fused: Tensor | None = None
        for level, fusion in zip(reversed(levels), reversed(self.fusion)):
            fused = fusion(level, fused)
        assert fused is not None
        return fused


class DPTHead(nn.Module):
    """A `DPTNeck` and DPT's output convolutions: conv3x3 (features/2), conv3x3 (32), ReLU, conv1x1 -> out."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: int = 256,
        level_channels: Sequence[int] = (96, 192, 384, 768),
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.neck = DPTNeck(in_channels, features, level_channels)
        self.output = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            nn.Conv2d(features // 2, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.neck(x))
