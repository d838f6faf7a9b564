"""Backbones as ordered lists of fine blocks grouped into coarse blocks.

A layout decides sharing per coarse block; the tree model copies each fine block once per task group of its
coarse block, so a backbone only has to expose its blocks in order plus the fine -> coarse grouping.

The contract (checked by `check_backbone` when a model is built). A backbone is a `Backbone`; wrap plain
torch modules with `Backbone(blocks, coarse_groups, out_channels, output_stride, name)`, where
  * `blocks`: the fine blocks, in order; each maps one tensor to one tensor, block 0 taking the normalised
    image [N, 3, H, W] and every later block the previous block's output (nothing else flows between
    blocks), and each survives `copy.deepcopy` (the model copies it once per task group);
  * `coarse_groups`: exactly 5 non-empty lists of fine-block indices (B0..B4, e.g. stem + 4 ResNet stages),
    together listing 0..len(blocks)-1 in order; layouts, named and TreeMTL-indexed alike, branch between them;
  * `out_channels`: channels of the last block's output (the heads' input);
  * `output_stride`: input size over the last block's spatial size.
A builder takes keyword arguments only and returns such a `Backbone`; register it in `BACKBONES`.

Builders (registry `BACKBONES`):
  * `resnet34_deeplab`: TreeMTL's DeepLab ResNet-34 (17 fine blocks, output stride 8, 512-d features).
  * `mobilenetv2`: MobileNetV2 split into 32 fine blocks as TreeMTL's prototxt builder does, 1280-d features.
  * `small_resnet`: a tiny ResNet with the same five-group structure, for fast CPU runs.
  * `vit_small`: a ViT-S/16-class vision transformer (`models/vit.py`): patch embedding + 4 groups of
    transformer blocks, 384-d tokens at output stride 16.

Every builder also takes `weights=<path>`: an ImageNet state_dict in a public release's key layout, loaded
into the backbone before a model copies its blocks into the branches (`models/pretrained.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbone_contract import NUM_COARSE_BLOCKS, Backbone, check_backbone

__all__ = [
    "Backbone",
    "BasicBlock",
    "ResidualBlock",
    "ConvBNAct",
    "InvertedResidual",
    "BACKBONES",
    "NUM_COARSE_BLOCKS",
    "build_backbone",
    "check_backbone",
    "init_weights",
    "resnet34_deeplab",
    "mobilenetv2",
    "small_resnet",
    "vit_small",
]


def init_weights(module: nn.Module, scheme: str = "paper") -> None:
    """'paper': conv weights N(0, 0.01), BN weight 1 / bias 0 (TreeMTL); 'kaiming': He-normal convs."""
    if scheme not in ("paper", "kaiming"):
        raise ValueError(f"unknown init scheme {scheme!r}; expected 'paper' or 'kaiming'")
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "paper":
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----- ResNet family ----------------------------------------------------------------------------------
def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps the size at stride 1 (TreeMTL's "full padding" for a 3x3 kernel)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (no residual; `ResidualBlock` adds it)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, dilation)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout, 1, dilation)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class ResidualBlock(nn.Module):
    """relu(downsample(x) + block(x)); `downsample` is a 1x1 conv + BN or None (identity)."""

    def __init__(self, block: nn.Module, downsample: nn.Module | None) -> None:
        super().__init__()
        self.block = block
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(residual + self.block(x))


def _res_layer(cin: int, cout: int, num_blocks: int, stride: int, dilation: int) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for i in range(num_blocks):
        s = stride if i == 0 else 1
        c_in = cin if i == 0 else cout
        ds = None
        # TreeMTL also projects the first block of a dilated layer (dilation 2/4) even at equal width.
        if i == 0 and (s != 1 or c_in != cout or dilation > 1):
            ds = nn.Sequential(nn.Conv2d(c_in, cout, 1, stride=s, bias=False), nn.BatchNorm2d(cout))
        blocks.append(ResidualBlock(BasicBlock(c_in, cout, s, dilation), ds))
    return blocks


def _as_int_list(value: Sequence[int] | int, n: int, what: str) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    out = [int(v) for v in value]
    if len(out) != n:
        raise ValueError(f"{what} needs {n} entries (one per stage), got {out}")
    return out


def _resnet(
    stem: nn.Module,
    stem_channels: int,
    layers: Sequence[int],
    widths: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_stride: int,
    name: str,
    init: str,
) -> Backbone:
    if len(layers) != 4:
        raise ValueError(f"layers must give the number of blocks of 4 stages, got {list(layers)}")
    if any(n < 1 for n in layers):
        raise ValueError(f"every stage needs at least one block, got layers={list(layers)}")
    blocks: list[nn.Module] = [stem]
    groups: list[list[int]] = [[0]]
    cin = stem_channels
    for n, w, s, d in zip(layers, widths, strides, dilations):
        start = len(blocks)
        blocks.extend(_res_layer(cin, w, n, s, d))
        groups.append(list(range(start, len(blocks))))
        cin = w
    backbone = Backbone(blocks, groups, widths[-1], output_stride, name)
    init_weights(backbone, init)
    return backbone


def resnet34_deeplab(
    layers: Sequence[int] = (3, 4, 6, 3),
    widths: Sequence[int] = (64, 128, 256, 512),
    in_channels: int = 3,
    init: str = "paper",
) -> Backbone:
    """TreeMTL's DeepLab ResNet-34: strides [1,2,1,1], dilations [1,1,2,4], output stride 8.

    Fine blocks: 0 = stem (conv7x7 s2, BN, ReLU, maxpool 3x3 s2 ceil_mode), then one per BasicBlock;
    coarse blocks = stem, layer1..layer4 ({0:[0], 1:[1,2,3], 2:[4..7], 3:[8..13], 4:[14,15,16]}).
    A 321x321 input gives 41x41x512.
    """
    widths = _as_int_list(widths, 4, "widths")
    stem = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    )
    return _resnet(
        stem,
        widths[0],
        _as_int_list(layers, 4, "layers"),
        widths,
        (1, 2, 1, 1),
        (1, 1, 2, 4),
        8,
        "resnet34_deeplab",
        init,
    )


def _stride_schedule(
    output_stride: int, stem_stride: int, stage_strides: Sequence[int]
) -> tuple[list[int], list[int]]:
    """DeepLab-style: once the running stride reaches `output_stride`, later strides become dilation."""
    strides, dilations = [], []
    current, rate = stem_stride, 1
    for s in stage_strides:
        if current >= output_stride and s > 1:
            rate *= s
            strides.append(1)
        else:
            current *= s
            strides.append(s)
        dilations.append(rate)
    if current != output_stride:
        raise ValueError(
            f"output_stride={output_stride} is not reachable; possible values are "
            f"{sorted({stem_stride * p for p in _prefix_products(stage_strides)})}"
        )
    return strides, dilations


def _prefix_products(values: Sequence[int]) -> list[int]:
    out, acc = [1], 1
    for v in values:
        acc *= v
        out.append(acc)
    return out


def small_resnet(
    widths: Sequence[int] = (16, 32, 64, 128),
    layers: Sequence[int] = (1, 1, 1, 1),
    output_stride: int = 8,
    stem_channels: int | None = None,
    in_channels: int = 3,
    init: str = "paper",
) -> Backbone:
    """Tiny ResNet for CPU runs: stem conv3x3 s2 + BN + ReLU, four BasicBlock stages (strides 1,2,2,2).

    `output_stride` in {2, 4, 8, 16}; stages beyond it keep the resolution and dilate instead (as DeepLab).
    Defaults: ~0.3 M parameters, 128-d features at 1/8 resolution (64x64 -> 8x8).
    """
    widths = _as_int_list(widths, 4, "widths")
    stem_c = widths[0] if stem_channels is None else int(stem_channels)
    strides, dilations = _stride_schedule(int(output_stride), 2, (1, 2, 2, 2))
    stem = nn.Sequential(
        nn.Conv2d(in_channels, stem_c, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(stem_c),
        nn.ReLU(),
    )
    return _resnet(
        stem,
        stem_c,
        _as_int_list(layers, 4, "layers"),
        widths,
        strides,
        dilations,
        int(output_stride),
        "small_resnet",
        init,
    )


# ----- MobileNetV2 -----------------------------------------------------------------------------------
class ConvBNAct(nn.Module):
    """conv-BN[-ReLU6]; one TreeMTL fine block when it sits outside a residual unit."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _inverted_residual_layers(
    cin: int, cout: int, stride: int, dilation: int, expand: int
) -> list[nn.Module]:
    hidden = cin * expand
    layers: list[nn.Module] = []
    if expand != 1:
        layers.append(ConvBNAct(cin, hidden, 1))
    layers.append(ConvBNAct(hidden, hidden, 3, stride, dilation, groups=hidden))
    layers.append(ConvBNAct(hidden, cout, 1, act=False))
    return layers


class InvertedResidual(nn.Module):
    """x + project(depthwise(expand(x))): a residual MobileNetV2 unit, kept whole as one fine block."""

    def __init__(self, channels: int, dilation: int, expand: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*_inverted_residual_layers(channels, channels, 1, dilation, expand))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


# (expansion t, channels c, repeats n, stride s) of the standard MobileNetV2, and the coarse block of each
# stage: B0 = stem + 16/24 stages (1/4), B1 = 32/64 stages, B2 = 96 stage, B3 = 160/320 stages,
# B4 = the last 1x1 conv.
_MBV2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_MBV2_COARSE = (0, 0, 1, 1, 2, 3, 3)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


def mobilenetv2(
    output_stride: int = 8,
    width_mult: float = 1.0,
    last_channels: int = 1280,
    in_channels: int = 3,
    init: str = "paper",
) -> Backbone:
    """MobileNetV2 as 32 fine blocks, coarse mapping {0:[0-6], 1:[7-17], 2:[18-22], 3:[23-30], 4:[31]}.

    The fine blocks follow TreeMTL's prototxt splitting (min-cut on the layer graph, parameter-free layers
    merged into the preceding conv): a unit without a skip connection contributes one block per conv
    (expand 1x1, depthwise 3x3, project 1x1, each with its BN/ReLU6); a unit with a skip is one block. With
    the standard widths that gives stem(1) + 2 + (3+1) + (3+2) + (3+3) + (3+2) + (3+2) + 3 + last 1x1 conv(1)
    = 32 blocks. `output_stride=8` (default) dilates the 64- and 160-channel stages as DeepLab does
    (321x321 -> 41x41x1280); 32 is the original network (TreeMTL's prototxt appears to use it).
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"mobilenetv2 output_stride must be 8, 16 or 32, got {output_stride}")
    stem_c = _make_divisible(32 * width_mult)
    blocks: list[nn.Module] = [ConvBNAct(in_channels, stem_c, 3, stride=2)]
    coarse: list[int] = [0]
    current, rate, cin = 2, 1, stem_c
    for (t, c, n, s), group in zip(_MBV2_STAGES, _MBV2_COARSE):
        cout = _make_divisible(c * width_mult)
        if s > 1 and current >= output_stride:
            # first unit keeps the previous rate, the rest of the stage uses the multiplied one (DeepLab)
            first_stride, first_rate, rate = 1, rate, rate * s
        else:
            current *= s
            first_stride, first_rate = s, rate
        for i in range(n):
            stride, dil = (first_stride, first_rate) if i == 0 else (1, rate)
            if stride == 1 and cin == cout:
                new = [InvertedResidual(cout, dil, t)]
            else:
                new = _inverted_residual_layers(cin, cout, stride, dil, t)
            blocks.extend(new)
            coarse.extend([group] * len(new))
            cin = cout
    last = _make_divisible(last_channels * max(1.0, width_mult))
    blocks.append(ConvBNAct(cin, last, 1))
    coarse.append(4)
    groups = [[f for f, c in enumerate(coarse) if c == g] for g in range(5)]
    backbone = Backbone(blocks, groups, last, output_stride, "mobilenetv2")
    init_weights(backbone, init)
    return backbone


def vit_small(**kwargs: Any) -> Backbone:
    """ViT-S/16; see `mtl_robust.models.vit.vit_small` (imported on use: it is the heaviest module)."""
    from .vit import vit_small as build

    return build(**kwargs)


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet34_deeplab": resnet34_deeplab,
    "mobilenetv2": mobilenetv2,
    "small_resnet": small_resnet,
    "vit_small": vit_small,
}


def build_backbone(name: str, weights: str | None = None, **kwargs: Any) -> Backbone:
    """The registered backbone `name` built with `kwargs`; `weights`: a pretrained state_dict to load."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    try:
        backbone = BACKBONES[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments {kwargs} for backbone {name!r}: {err}") from err
    backbone = check_backbone(backbone, name)
    if weights is not None:
        from .pretrained import load_pretrained  # torch.load and key maps only when weights are given

        load_pretrained(backbone, weights)
    return backbone
