"""The vision-transformer backbone and the DPT-like head: contract, layouts, sizes, parameter count."""

from __future__ import annotations

import pytest
import torch

from mtl_robust.models import build_backbone, build_model, from_index, num_layouts
from mtl_robust.models.heads import build_head
from mtl_robust.models.vit import TransformerBlock

torch.set_num_threads(1)

TASKS = {"seg": 5, "normal": 3, "depth": 1}
TINY = {"name": "vit_small", "embed_dim": 32, "depth": 4, "num_heads": 2, "patch_size": 8, "img_size": 32}
TINY_HEAD = {"name": "dpt", "features": 16, "level_channels": [8, 8, 8, 8], "hidden": 8}


def test_vit_small_is_vit_s16_in_five_coarse_blocks() -> None:
    with torch.device("meta"):
        bb = build_backbone("vit_small")
    # timm's ViT-S/16 has 22,050,664 parameters: minus the class token (384), its position (384) and the
    # 1000-way classifier (385,000), which a dense backbone does not use
    assert sum(p.numel() for p in bb.parameters()) == 22_050_664 - 384 - 384 - 385_000
    assert bb.coarse_groups == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12, 13]]
    assert bb.out_channels == 384 and bb.output_stride == 16
    assert sum(isinstance(b, TransformerBlock) for b in bb.blocks) == 12


@pytest.mark.parametrize("depth", [4, 5, 6])
def test_any_depth_fills_all_four_groups(depth: int) -> None:
    bb = build_backbone("vit_small", embed_dim=16, depth=depth, num_heads=2)
    assert len(bb.coarse_groups) == 5 and all(bb.coarse_groups)
    with pytest.raises(ValueError, match="depth must be >= 4"):
        build_backbone("vit_small", depth=3)


def test_features_have_the_patch_stride_for_any_input_size() -> None:
    bb = build_backbone("vit_small", embed_dim=16, depth=4, num_heads=2, patch_size=8, img_size=32)
    with torch.no_grad():
        assert bb(torch.rand(2, 3, 32, 32)).shape == (2, 16, 4, 4)
        assert bb(torch.rand(1, 3, 40, 72)).shape == (1, 16, 5, 9)  # position grid resized
    with pytest.raises(ValueError, match="smaller than one 8-pixel patch"):
        bb(torch.rand(1, 3, 4, 32))


@pytest.mark.parametrize("layout", ["all_shared", "independent", "branch_at_1", "branch_at_3", 7])
def test_every_layout_builds_and_predicts_at_input_size(layout) -> None:
    model = build_model(TINY, TASKS, layout, head=TINY_HEAD, seed=0)
    x = torch.rand(2, 3, 48, 64, requires_grad=True)
    out = model(x)
    assert {t: tuple(y.shape) for t, y in out.items()} == {t: (2, c, 48, 64) for t, c in TASKS.items()}
    sum(y.square().mean() for y in out.values()).backward()  # an attack's input gradient exists
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_treemtl_indices_cover_the_vit() -> None:
    n = num_layouts(3, 5)
    for index in (0, n // 2, n - 1):
        layout = from_index(index, tuple(TASKS), 5)
        model = build_model(TINY, TASKS, index, head=TINY_HEAD, seed=0)
        assert model.layout == layout


def test_dpt_head_output_stride_and_branching_independence() -> None:
    head = build_head("dpt", 32, 4, features=16, level_channels=[8, 8, 8, 8], hidden=8)
    assert head(torch.rand(1, 32, 6, 6)).shape == (1, 4, 48, 48)  # tokens at stride s -> s/8
    assert head(torch.rand(1, 32, 3, 5)).shape == (1, 4, 24, 40)  # odd grids survive the 2s level
    shared = build_model(TINY, TASKS, "all_shared", head=TINY_HEAD, seed=0)
    independent = build_model(TINY, TASKS, "independent", head=TINY_HEAD, seed=0)
    per_branch = shared.backbone_parameter_count()
    assert independent.backbone_parameter_count() == 3 * per_branch
    with torch.no_grad():  # branches start as copies of one initialisation, so all layouts agree at init
        x = torch.rand(1, 3, 32, 32)
        for t in TASKS:
            torch.testing.assert_close(shared(x)[t], independent(x)[t])
