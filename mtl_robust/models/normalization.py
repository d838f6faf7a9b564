"""Input normalisation inside the model, so that data, attacks and epsilons all live in [0, 1] RGB space.

Presets:
  * ``imagenet``: (x - mean) / std with the ImageNet RGB statistics;
  * ``caffe``: the paper's preprocessing: RGB -> BGR, x * 255, minus the Caffe BGR mean
    (104.00698793, 116.66876762, 122.67891434), no division;
  * ``none``: identity.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InputNormalization", "NORMALIZATIONS", "CAFFE_BGR_MEAN", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)

# preset -> (channel order applied to the RGB input, scale, mean, std) in the output channel order
_PRESETS: dict[str, tuple[tuple[int, int, int], float, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0, 1, 2), 1.0, IMAGENET_MEAN, IMAGENET_STD),
    "caffe": ((2, 1, 0), 255.0, CAFFE_BGR_MEAN, (1.0, 1.0, 1.0)),
}
NORMALIZATIONS = ("imagenet", "caffe", "none")


class InputNormalization(nn.Module):
    """Maps [0, 1] RGB images [N, 3, H, W] to what the network was designed for; differentiable."""

    def __init__(self, preset: str = "imagenet") -> None:
        super().__init__()
        if preset not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {preset!r}; expected one of {NORMALIZATIONS}")
        self.preset = preset
        if preset == "none":
            self.order = None
            return
        order, scale, mean, std = _PRESETS[preset]
        self.order = list(order)
        self.scale = scale
        # non-persistent: state dicts do not depend on the preset, and the preset is part of the model spec
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order is None:
            return x
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{self.preset} normalization expects RGB images [N, 3, H, W] in [0, 1], got {tuple(x.shape)}"
            )
        if self.order != [0, 1, 2]:
            x = x[:, self.order]
        return (x * self.scale - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}"
