"""Joint image/target transforms for dense multi-task samples.

A sample is ``(x, targets)``: ``x`` float32 [3,H,W] RGB in [0,1]; ``targets`` maps task names to
``seg`` int64 [H,W] (255 = ignore), ``normal`` float32 [3,H,W] (all-zero = invalid; channel 0 is the
horizontal axis in every reader), ``depth`` float32 [1,H,W] (0 = invalid), ``keypoints``/``edges``
float32 [1,H,W]. Every transform is a callable ``(x, targets) -> (x, targets)`` that changes all of them
consistently.

Interpolation follows the AdaShare/TreeMTL loaders: the image bilinear, every target nearest, so labels
stay labels, invalid markers stay exact and normals stay unit vectors. ``F.interpolate(mode="nearest")``
picks source index ``floor(i * in / out)``, the same rule as OpenCV's ``INTER_NEAREST`` used there.

Randomness: each random transform draws from ``generator`` when one is given, else from torch's global
RNG. Leave ``generator=None`` when using DataLoader workers: torch seeds each worker's global RNG
differently, whereas a ``torch.Generator`` stored in the dataset is copied with the same state into every
worker (all workers would then draw identical augmentations). Pass a generator for reproducible
single-process runs and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Sample",
    "IGNORE_INDEX",
    "PAD_VALUES",
    "CAFFE_MEAN_RGB",
    "NYUV2_SIZE",
    "TASKONOMY_SIZE",
    "resize",
    "hflip",
    "pad_and_crop",
    "Compose",
    "Resize",
    "RandomScale",
    "RandomHorizontalFlip",
    "RandomPadCrop",
    "paper_transform",
    "paper_train_transform",
    "paper_test_transform",
]

Sample = tuple[Tensor, dict[str, Tensor]]
Size = tuple[int, int]

IGNORE_INDEX = 255
# Padding marks padded pixels invalid for every task. keypoints/edges have no invalid value in their
# [-1, 1] range, so padding uses 255, the value the code line's keypoint/edge loss ignores.
PAD_VALUES: dict[str, float] = {"seg": 255, "normal": 0.0, "depth": 0.0, "keypoints": 255.0, "edges": 255.0}
# Caffe/DeepLab BGR mean (104.008, 116.669, 122.679) in RGB order scaled to [0, 1]: the code line pads the
# raw image with 0 before subtracting this mean; padding with it instead gives 0 after normalisation.
CAFFE_MEAN_RGB = (122.67891434 / 255.0, 116.66876762 / 255.0, 104.00698793 / 255.0)
NYUV2_SIZE: Size = (321, 321)
TASKONOMY_SIZE: Size = (224, 224)


def _check_size(size: Sequence[int], name: str = "size") -> Size:
    if len(size) != 2 or any(int(s) <= 0 for s in size):
        raise ValueError(f"{name} must be (height, width) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _resize_target(t: Tensor, size: Size) -> Tensor:
    if t.dim() == 2:  # seg [H,W], integer: interpolate in float (labels <= 255 are exact) and cast back
        out = F.interpolate(t[None, None].float(), size=size, mode="nearest")[0, 0]
        return out.to(t.dtype)
    if t.dim() == 3:
        return F.interpolate(t[None].float(), size=size, mode="nearest")[0].to(t.dtype)
    raise ValueError(f"targets must be [H,W] or [C,H,W], got shape {tuple(t.shape)}")


def resize(
    x: Tensor, targets: Mapping[str, Tensor], size: Sequence[int], image_mode: str = "bilinear"
) -> Sample:
    """Resize to ``size`` = (H, W): image with ``image_mode`` ("bilinear" or "nearest"), targets nearest."""
    size = _check_size(size)
    if tuple(x.shape[-2:]) == size:
        return x, dict(targets)
    if image_mode == "bilinear":
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0)
    elif image_mode == "nearest":
        x = F.interpolate(x[None], size=size, mode="nearest")[0]
    else:
        raise ValueError(f"image_mode must be 'bilinear' or 'nearest', got {image_mode!r}")
    return x, {k: _resize_target(t, size) for k, t in targets.items()}


def hflip(x: Tensor, targets: Mapping[str, Tensor], negate_normal_x: bool = True) -> Sample:
    """Mirror left-right. A mirrored scene's normals point the other way horizontally, so the x (channel 0)
    component is negated when ``negate_normal_x`` (the AdaShare NYUv2 loader did not do this; its Taskonomy
    loader did)."""
    out = {k: t.flip(-1) for k, t in targets.items()}
    if negate_normal_x and "normal" in out:
        normal = out["normal"].clone()
        normal[0] = -normal[0]
        out["normal"] = normal
    return x.flip(-1), out


def _image_fill(image_pad: str | float | Sequence[float]) -> Tensor:
    if isinstance(image_pad, str):
        if image_pad == "zero":
            return torch.zeros(3)
        if image_pad == "mean":
            return torch.tensor(CAFFE_MEAN_RGB)
        raise ValueError(f"image_pad must be 'zero', 'mean', a float or 3 floats, got {image_pad!r}")
    fill = torch.as_tensor(image_pad, dtype=torch.float32).flatten()
    if fill.numel() == 1:
        fill = fill.expand(3)
    if fill.numel() != 3:
        raise ValueError(f"image_pad must be 'zero', 'mean', a float or 3 floats, got {image_pad!r}")
    return fill.clone()


def _pad_value(key: str, pad_values: Mapping[str, float] | None) -> float:
    if pad_values is not None and key in pad_values:
        return pad_values[key]
    return PAD_VALUES.get(key, 0.0)


def pad_and_crop(
    x: Tensor,
    targets: Mapping[str, Tensor],
    size: Sequence[int],
    top: int,
    left: int,
    image_pad: str | float | Sequence[float] = "zero",
    pad_values: Mapping[str, float] | None = None,
) -> Sample:
    """Pad to at least ``size`` (centred, like the code line) then cut ``size`` at (top, left) of the padded
    canvas. ``top``/``left`` must lie in [0, padded - size]."""
    ch, cw = _check_size(size)
    h, w = x.shape[-2:]
    ph, pw = max(h, ch), max(w, cw)
    if not (0 <= top <= ph - ch and 0 <= left <= pw - cw):
        raise ValueError(f"crop offset ({top}, {left}) outside [0, {ph - ch}] x [0, {pw - cw}]")
    oh, ow = (ph - h) // 2, (pw - w) // 2

    def place(t: Tensor, fill: Tensor | float) -> Tensor:
        if (ph, pw) == (h, w):
            canvas = t
        else:
            canvas = torch.empty((*t.shape[:-2], ph, pw), dtype=t.dtype)
            if isinstance(fill, Tensor):
                canvas[:] = fill.to(t.dtype).view(-1, 1, 1)
            else:
                canvas.fill_(fill)
            canvas[..., oh : oh + h, ow : ow + w] = t
        return canvas[..., top : top + ch, left : left + cw].contiguous()

    x = place(x, _image_fill(image_pad))
    return x, {k: place(t, float(_pad_value(k, pad_values))) for k, t in targets.items()}


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high_inclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(0, high_inclusive + 1, (), generator=generator))


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Tensor, dict[str, Tensor]], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor, targets: dict[str, Tensor]) -> Sample:
        for t in self.transforms:
            x, targets = t(x, targets)
        return x, targets

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize to a fixed (H, W); ``size=None`` leaves the sample as it is."""

    def __init__(self, size: Sequence[int] | None, image_mode: str = "bilinear") -> None:
        self.size = None if size is None else _check_size(size)
        self.image_mode = image_mode

    def __call__(self, x: Tensor, targets: dict[str, Tensor]) -> Sample:
        if self.size is None:
            return x, targets
        return resize(x, targets, self.size, self.image_mode)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomScale:
    """Rescale by s ~ U[lo, hi); the new size is ``int(h * s), int(w * s)`` as in the code line. Depth values
    are not divided by s (the AdaShare line does not; LibMTL does)."""

    def __init__(self, scale_range: Sequence[float] = (0.5, 1.5), generator: torch.Generator | None = None):
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range!r}")
        self.scale_range = (lo, hi)
        self.generator = generator

    def __call__(self, x: Tensor, targets: dict[str, Tensor]) -> Sample:
        lo, hi = self.scale_range
        s = lo + (hi - lo) * _uniform(self.generator)
        h, w = x.shape[-2:]
        return resize(x, targets, (max(1, int(h * s)), max(1, int(w * s))))

    def __repr__(self) -> str:
        return f"RandomScale({self.scale_range})"


class RandomHorizontalFlip:
    """Mirror with probability ``p``; see :func:`hflip` for the normal x negation."""

    def __init__(
        self, p: float = 0.5, flip_negates_normal_x: bool = True, generator: torch.Generator | None = None
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.flip_negates_normal_x = flip_negates_normal_x
        self.generator = generator

    def __call__(self, x: Tensor, targets: dict[str, Tensor]) -> Sample:
        if _uniform(self.generator) < self.p:
            return hflip(x, targets, self.flip_negates_normal_x)
        return x, targets

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p}, flip_negates_normal_x={self.flip_negates_normal_x})"


class RandomPadCrop:
    """Pad (centred) to at least ``size`` and take a uniformly placed ``size`` crop."""

    def __init__(
        self,
        size: Sequence[int],
        image_pad: str | float | Sequence[float] = "zero",
        pad_values: Mapping[str, float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = _check_size(size)
        _image_fill(image_pad)  # validate early
        self.image_pad = image_pad
        self.pad_values = dict(pad_values) if pad_values else None
        self.generator = generator

    def __call__(self, x: Tensor, targets: dict[str, Tensor]) -> Sample:
        ch, cw = self.size
        h, w = x.shape[-2:]
        top = _randint(max(h, ch) - ch, self.generator)
        left = _randint(max(w, cw) - cw, self.generator)
        return pad_and_crop(x, targets, self.size, top, left, self.image_pad, self.pad_values)

    def __repr__(self) -> str:
        return f"RandomPadCrop({self.size}, image_pad={self.image_pad!r})"


def paper_transform(
    train: bool,
    size: Sequence[int] | None,
    scale_range: Sequence[float] | None = (0.5, 1.5),
    flip_p: float = 0.5,
    flip_negates_normal_x: bool = True,
    image_pad: str | float | Sequence[float] = "zero",
    generator: torch.Generator | None = None,
) -> Compose:
    """The AdaShare/TreeMTL preprocessing.

    train: random scale in ``scale_range`` (image bilinear, targets nearest), horizontal flip with
    probability ``flip_p``, centred pad + random crop to ``size``. test: resize to ``size``.
    ``size=None`` skips the crop (train) or the resize (test); ``scale_range=None`` skips the scaling.
    """
    if not train:
        return Compose([Resize(size)] if size is not None else [])
    steps: list[Callable[[Tensor, dict[str, Tensor]], Sample]] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range, generator))
    if flip_p > 0:
        steps.append(RandomHorizontalFlip(flip_p, flip_negates_normal_x, generator))
    if size is not None:
        steps.append(RandomPadCrop(size, image_pad, generator=generator))
    return Compose(steps)


def paper_train_transform(
    size: Sequence[int] | None = NYUV2_SIZE,
    scale_range: Sequence[float] | None = (0.5, 1.5),
    flip_p: float = 0.5,
    flip_negates_normal_x: bool = True,
    image_pad: str | float | Sequence[float] = "zero",
    generator: torch.Generator | None = None,
) -> Compose:
    """Training augmentation of :func:`paper_transform`; default size 321x321 (NYUv2; Taskonomy: 224x224)."""
    return paper_transform(True, size, scale_range, flip_p, flip_negates_normal_x, image_pad, generator)


def paper_test_transform(size: Sequence[int] | None = NYUV2_SIZE) -> Compose:
    """Test-time resize of :func:`paper_transform`; default size 321x321 (NYUv2; Taskonomy: 224x224)."""
    return paper_transform(False, size)
