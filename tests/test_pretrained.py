"""ImageNet weights in torchvision's ResNet-34 and timm's ViT-S/16 key layouts, loaded into every branch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from mtl_robust.models import build_backbone, build_model
from mtl_robust.models.pretrained import PretrainedWeightsError, load_pretrained

torch.set_num_threads(1)
TASKS = {"seg": 4, "depth": 1}


def torchvision_resnet34_state(scale: int = 1) -> dict[str, torch.Tensor]:
    """The keys and shapes of torchvision's resnet34().state_dict(), filled with random values."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean"):
            state[f"{prefix}.{name}"] = torch.randn(c, generator=g)
        state[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(7)

    state["conv1.weight"] = torch.randn(64 // scale, 3, 7, 7, generator=g)
    bn("bn1", 64 // scale)
    cin = 64 // scale
    for stage, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        w //= scale
        for i in range(n):
            p = f"layer{stage}.{i}"
            state[f"{p}.conv1.weight"] = torch.randn(w, cin if i == 0 else w, 3, 3, generator=g)
            bn(f"{p}.bn1", w)
            state[f"{p}.conv2.weight"] = torch.randn(w, w, 3, 3, generator=g)
            bn(f"{p}.bn2", w)
            if i == 0 and stage > 1:
                state[f"{p}.downsample.0.weight"] = torch.randn(w, cin, 1, 1, generator=g)
                bn(f"{p}.downsample.1", w)
        cin = w
    state["fc.weight"] = torch.randn(1000, cin, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def timm_vit_s16_state(grid: int = 14, dim: int = 384, depth: int = 12) -> dict[str, torch.Tensor]:
    """The keys and shapes of timm's vit_small_patch16_224 state_dict, filled with random values."""
    g = torch.Generator().manual_seed(1)
    state = {
        "cls_token": torch.randn(1, 1, dim, generator=g),
        "pos_embed": torch.randn(1, 1 + grid * grid, dim, generator=g),
        "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16, generator=g),
        "patch_embed.proj.bias": torch.randn(dim, generator=g),
    }
    for i in range(depth):
        for name, shape in (
            ("norm1.weight", (dim,)), ("norm1.bias", (dim,)),
            ("attn.qkv.weight", (3 * dim, dim)), ("attn.qkv.bias", (3 * dim,)),
            ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
            ("norm2.weight", (dim,)), ("norm2.bias", (dim,)),
            ("mlp.fc1.weight", (4 * dim, dim)), ("mlp.fc1.bias", (4 * dim,)),
            ("mlp.fc2.weight", (dim, 4 * dim)), ("mlp.fc2.bias", (dim,)),
        ):  # fmt: skip
            state[f"blocks.{i}.{name}"] = torch.randn(*shape, generator=g)
    state["norm.weight"] = torch.randn(dim, generator=g)
    state["norm.bias"] = torch.randn(dim, generator=g)
    state["head.weight"] = torch.randn(1000, dim, generator=g)
    state["head.bias"] = torch.randn(1000, generator=g)
    return state


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "resnet34-imagenet.pth"
    torch.save(torchvision_resnet34_state(), path)
    return path


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "vit_small_patch16_224.pth"
    torch.save({"model": timm_vit_s16_state()}, path)  # wrapped, as some releases ship it
    return path


@pytest.fixture(scope="module")
def backbones() -> dict:
    """One of each, for the error cases (a refused file leaves the backbone untouched)."""
    return {name: build_backbone(name) for name in ("resnet34_deeplab", "vit_small")}


def test_resnet34_weights_reach_every_branch(resnet_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = torchvision_resnet34_state()
    with caplog.at_level(logging.INFO, logger="mtl_robust.models.pretrained"):
        model = build_model({"name": "resnet34_deeplab", "weights": str(resnet_file)}, TASKS, "branch_at_3")
    assert "unused from the file 2: fc.bias, fc.weight" in caplog.text
    torch.testing.assert_close(model.branches[0][0][0].weight, state["conv1.weight"])  # the shared trunk
    torch.testing.assert_close(model.branches[0][0][1].running_var, state["bn1.running_var"])
    assert len(model.branches[10]) == len(model.branches[14]) == 2
    for group in range(2):  # the blocks copied into each task's branch
        # layer3 block 2 is fine block 1 + 3 + 4 + 2 = 10; layer4 block 0 (with its projection) is 14
        torch.testing.assert_close(
            model.branches[10][group].block.conv2.weight, state["layer3.2.conv2.weight"]
        )
        torch.testing.assert_close(
            model.branches[14][group].downsample[0].weight, state["layer4.0.downsample.0.weight"]
        )
    assert "missing in the file" not in caplog.text
    assert f"loaded {len(state) - 2} tensors" in caplog.text


def test_vit_weights_drop_the_class_token_and_resize_positions(
    vit_file: Path, backbones: dict, tmp_path: Path
) -> None:
    state = timm_vit_s16_state()
    model = build_model({"name": "vit_small", "weights": str(vit_file)}, TASKS, "branch_at_4", head="light")
    for group in range(2):
        torch.testing.assert_close(
            model.branches[12][group].mlp.fc2.weight, state["blocks.11.mlp.fc2.weight"]
        )
        torch.testing.assert_close(model.branches[13][group].norm.bias, state["norm.bias"])
    torch.testing.assert_close(model.branches[0][0].pos_embed, state["pos_embed"][:, 1:])
    torch.testing.assert_close(model.branches[0][0].proj.weight, state["patch_embed.proj.weight"])
    bb = backbones["vit_small"]
    report = load_pretrained(bb, vit_file)
    assert report.unexpected == ["cls_token", "head.bias", "head.weight"] and report.missing == []
    # a 384-pixel release (24 x 24 positions) into the 224 reference grid is resized; a constant stays;
    # a file holding only some tensors leaves the others as they were and lists them as missing
    big = timm_vit_s16_state(grid=24)
    partial = {"pos_embed": big["pos_embed"].clone(), "norm.bias": big["norm.bias"]}
    partial["pos_embed"][:, 1:] = 0.5
    torch.save(partial, tmp_path / "vit384.pth")
    report = load_pretrained(bb, tmp_path / "vit384.pth")
    torch.testing.assert_close(bb.blocks[0].pos_embed, torch.full((1, 196, 384), 0.5))
    assert "blocks.1.attn.qkv.weight" in report.missing and len(report.loaded) == 2
    torch.testing.assert_close(bb.blocks[1].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_a_wrong_file_is_one_clear_error(
    resnet_file: Path, vit_file: Path, backbones: dict, tmp_path: Path
) -> None:
    resnet, vit = backbones["resnet34_deeplab"], backbones["vit_small"]
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        load_pretrained(resnet, tmp_path / "missing.pth")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(PretrainedWeightsError, match=r"weights_only=True"):
        load_pretrained(resnet, tmp_path / "notes.txt")
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, tmp_path / "code.pth")  # pickles a function
    with pytest.raises(PretrainedWeightsError, match=r"weights_only=True"):
        load_pretrained(resnet, tmp_path / "code.pth")
    with pytest.raises(PretrainedWeightsError, match="no key matches the torchvision ResNet-34 layout"):
        load_pretrained(resnet, vit_file)
    with pytest.raises(PretrainedWeightsError, match="no key matches the timm ViT-S/16 layout"):
        load_pretrained(vit, resnet_file)
    torch.save(torchvision_resnet34_state(scale=2), tmp_path / "half.pth")
    expected = r"conv1.weight -> blocks.0.0.weight: file \(32, 3, 7, 7\) vs backbone \(64, 3, 7, 7\)"
    with pytest.raises(PretrainedWeightsError, match=expected):
        load_pretrained(resnet, tmp_path / "half.pth")
    with pytest.raises(PretrainedWeightsError, match="'small_resnet' has no pretrained layout"):
        build_backbone("small_resnet", weights=str(resnet_file))


def test_weights_travel_in_the_model_spec(resnet_file: Path) -> None:
    model = build_model({"name": "resnet34_deeplab", "weights": str(resnet_file)}, TASKS, "all_shared")
    assert model.spec["backbone"] == {"name": "resnet34_deeplab", "weights": str(resnet_file)}
