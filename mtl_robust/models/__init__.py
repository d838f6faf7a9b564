"""Models: backbones as block lists, sharing layouts, task heads and the tree multi-task model."""

from .backbones import (
    BACKBONES,
    NUM_COARSE_BLOCKS,
    Backbone,
    build_backbone,
    check_backbone,
    init_weights,
    mobilenetv2,
    resnet34_deeplab,
    small_resnet,
)
from .heads import HEADS, ASPPHead, LightHead, build_head
from .layout import (
    Layout,
    all_shared,
    branch_at,
    enumerate_layouts,
    from_index,
    independent,
    index_of,
    num_layouts,
    parse_layout_string,
    resolve_layout,
)
from .normalization import InputNormalization
from .tree import MultiTaskModel, build_model, count_parameters

__all__ = [
    "BACKBONES",
    "NUM_COARSE_BLOCKS",
    "Backbone",
    "build_backbone",
    "check_backbone",
    "init_weights",
    "mobilenetv2",
    "resnet34_deeplab",
    "small_resnet",
    "HEADS",
    "ASPPHead",
    "LightHead",
    "build_head",
    "Layout",
    "all_shared",
    "branch_at",
    "enumerate_layouts",
    "from_index",
    "independent",
    "index_of",
    "num_layouts",
    "parse_layout_string",
    "resolve_layout",
    "InputNormalization",
    "MultiTaskModel",
    "build_model",
    "count_parameters",
]
