"""Load ImageNet weights in the key layout of the usual public releases into a backbone.

`backbone.weights=<path>` (a builder argument, handled by `build_backbone`) loads, before the model copies
the backbone's blocks into its branches, so the shared trunk and every branch copy start from the same
pretrained weights. Supported layouts:

* ``resnet34_deeplab``: torchvision's ResNet-34 (``conv1``, ``bn1``, ``layer{1-4}.{i}.{conv,bn}{1,2}``,
  ``layer{2-4}.0.downsample.{0,1}``; ``fc`` is the classifier and stays unused). The dilated layers 3 and
  4 take the same kernels: dilation changes where a kernel looks, not its shape.
* ``vit_small``: timm's ViT-S/16 (``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.{norm1, attn.qkv,
  attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``; ``cls_token`` and ``head`` stay unused, and the class
  token's position embedding is dropped). A position grid other than the backbone's reference grid is
  resized bicubically.

Files are read with ``torch.load(weights_only=True)``: a pickle that is more than tensors is refused. A
file wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` and keys prefixed ``module.`` are accepted.
A file that does not match the layout at all, or whose tensors have the wrong shapes, is one
`PretrainedWeightsError` naming the file and what was expected; keys of the backbone the file lacks
(missing) and keys of the file the backbone does not use (unexpected) are logged and kept on
``backbone.pretrained_report``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbone_contract import Backbone

__all__ = ["PretrainedWeightsError", "LoadReport", "load_pretrained", "LAYOUTS"]

log = logging.getLogger(__name__)


class PretrainedWeightsError(ValueError):
    """A weights file that cannot be loaded into the backbone (unreadable, wrong layout, wrong shapes)."""


@dataclass
class LoadReport:
    """What a load did: backbone keys filled, backbone keys the file lacked, file keys left unused."""

    path: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.path} ({self.layout}): loaded {len(self.loaded)} tensors"
        if self.missing:
            text += f"; missing in the file {len(self.missing)}: {', '.join(self.missing[:8])}"
        if self.unexpected:
            text += f"; unused from the file {len(self.unexpected)}: {', '.join(self.unexpected[:8])}"
        return text


def _resnet_key(key: str, layers: tuple[int, ...]) -> str | None:
    """torchvision ResNet key -> resnet34_deeplab backbone key (None: not part of the backbone)."""
    if m := re.fullmatch(r"(conv1|bn1)\.(.+)", key):
        return f"blocks.0.{0 if m[1] == 'conv1' else 1}.{m[2]}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if not m:
        return None
    stage, index, rest = int(m[1]), int(m[2]), m[3]
    if not 1 <= stage <= len(layers) or index >= layers[stage - 1]:
        return None
    fine = 1 + sum(layers[: stage - 1]) + index
    if rest.startswith("downsample."):
        return f"blocks.{fine}.{rest}"
    return f"blocks.{fine}.block.{rest}"


# A layout maps a file's state_dict to {backbone key: (file key, tensor)}; file keys left out are unused.
Mapped = dict[str, tuple[str, Tensor]]


def _resnet34_layout(state: Mapping[str, Tensor], backbone: Backbone) -> Mapped:
    layers = tuple(len(g) for g in backbone.coarse_groups[1:])
    return {k: (key, v) for key, v in state.items() if (k := _resnet_key(key, layers)) is not None}


def _vit_layout(state: Mapping[str, Tensor], backbone: Backbone) -> Mapped:
    depth = len(backbone.blocks) - 2
    out: Mapped = {}
    for key, value in state.items():
        if key in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
            out[f"blocks.0.proj.{key.rsplit('.', 1)[1]}"] = (key, value)
        elif key == "pos_embed":
            out["blocks.0.pos_embed"] = (key, _position_embeddings(value, backbone.blocks[0].grid))
        elif (m := re.fullmatch(r"blocks\.(\d+)\.(.+)", key)) and int(m[1]) < depth:
            out[f"blocks.{int(m[1]) + 1}.{m[2]}"] = (key, value)
        elif key in ("norm.weight", "norm.bias"):
            out[f"blocks.{depth + 1}.{key}"] = (key, value)
    return out


def _position_embeddings(value: Tensor, grid: int) -> Tensor:
    """timm's [1, 1 + g*g, C] (or [1, g*g, C]) -> [1, grid*grid, C] without the class token."""
    if value.dim() != 3:
        raise PretrainedWeightsError(f"pos_embed must be [1, tokens, C], got {tuple(value.shape)}")
    tokens = value.shape[1]
    side = round(tokens**0.5)
    if side * side != tokens:
        value, tokens = value[:, 1:], tokens - 1  # the class token's position comes first
        side = round(tokens**0.5)
    if side * side != tokens:
        raise PretrainedWeightsError(
            f"pos_embed has {value.shape[1]} tokens: not a square grid (+1 class token)"
        )
    if side == grid:
        return value
    c = value.shape[-1]
    square = value.transpose(1, 2).reshape(1, c, side, side).float()
    resized = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return resized.reshape(1, c, grid * grid).transpose(1, 2).to(value.dtype)


# backbone name -> (the release's name, key mapping)
LAYOUTS: dict[str, tuple[str, Callable[[Mapping[str, Tensor], Backbone], Mapped]]] = {
    "resnet34_deeplab": ("torchvision ResNet-34", _resnet34_layout),
    "vit_small": ("timm ViT-S/16", _vit_layout),
}


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(
            f"backbone.weights={path}: no such file; expected an ImageNet state_dict saved with torch.save"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling raises many types; all mean "not a tensors-only torch file"
        raise PretrainedWeightsError(
            f"backbone.weights={path}: not a state_dict torch.load(weights_only=True) can read "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise PretrainedWeightsError(
            f"backbone.weights={path}: expected a mapping of parameter names to tensors, "
            f"got {type(obj).__name__}"
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_pretrained(backbone: Backbone, path: str | Path) -> LoadReport:
    """Copy the weights of `path` into `backbone` in place; see the module docstring."""
    path = Path(path).expanduser()
    name = backbone.name
    if name not in LAYOUTS:
        raise PretrainedWeightsError(
            f"backbone.weights is supported for {sorted(LAYOUTS)}; backbone {name!r} has no pretrained layout"
        )
    release, mapping = LAYOUTS[name]
    state = _read_state_dict(path)
    mapped = mapping(state, backbone)
    own = backbone.state_dict()
    if not mapped:
        raise PretrainedWeightsError(
            f"backbone.weights={path}: no key matches the {release} layout that backbone {name!r} loads "
            f"(found keys like {sorted(state)[:5]}); is it a checkpoint of another model?"
        )
    wrong = [
        f"{source} -> {k}: file {tuple(v.shape)} vs backbone {tuple(own[k].shape)}"
        for k, (source, v) in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise PretrainedWeightsError(
            f"backbone.weights={path}: {len(wrong)} tensor(s) have other shapes than backbone {name!r} "
            f"built with these arguments ({release} expected): {'; '.join(wrong[:4])}"
        )
    usable = {k: v for k, (_, v) in mapped.items() if k in own}
    used = {source for k, (source, _) in mapped.items() if k in own}
    backbone.load_state_dict(usable, strict=False)
    report = LoadReport(
        str(path),
        release,
        loaded=sorted(usable),
        missing=sorted(set(own) - set(usable)),
        unexpected=sorted(set(state) - used),
    )
    log.info("pretrained weights %s", report.describe())
    if report.missing:
        log.warning(
            "pretrained weights leave %d backbone tensors at their initialisation", len(report.missing)
        )
    backbone.pretrained_report = report
    return report
