"""Backbones, heads, input normalisation and the tree multi-task model."""

from __future__ import annotations

import json

import pytest
import torch

from mtl_robust.models import (
    BACKBONES,
    ASPPHead,
    Backbone,
    InputNormalization,
    LightHead,
    MultiTaskModel,
    all_shared,
    build_model,
    from_index,
    mobilenetv2,
    resnet34_deeplab,
    small_resnet,
)

TASKS = {"seg": 5, "normal": 3, "depth": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _small(layout, **kw):
    kw.setdefault("seed", 0)
    return build_model({"name": "small_resnet", "widths": [8, 8, 16, 16]}, TASKS, layout, **kw)


# ----- backbones ----------------------------------------------------------------------------------------
def test_resnet34_deeplab_structure_and_shape():
    bb = resnet34_deeplab()
    assert len(bb.blocks) == 17
    assert bb.coarse_groups == [[0], [1, 2, 3], [4, 5, 6, 7], list(range(8, 14)), [14, 15, 16]]
    assert (bb.out_channels, bb.output_stride) == (512, 8)
    with torch.no_grad():
        y = bb(torch.rand(1, 3, 321, 321))
    assert y.shape == (1, 512, 41, 41)
    # dilated layers project in their first block even at equal width (TreeMTL rule); others do not
    assert bb.blocks[8].downsample is not None and bb.blocks[14].downsample is not None
    assert bb.blocks[1].downsample is None and bb.blocks[9].downsample is None
    assert bb.blocks[14].block.conv1.dilation == (4, 4)
    convs = [m.weight for m in bb.modules() if isinstance(m, torch.nn.Conv2d)]
    assert torch.cat([w.flatten() for w in convs]).std().item() == pytest.approx(0.01, rel=0.02)


def test_mobilenetv2_blocks_and_shape():
    bb = mobilenetv2()
    assert len(bb.blocks) == 32
    assert bb.coarse_groups == [
        list(range(0, 7)),
        list(range(7, 18)),
        list(range(18, 23)),
        list(range(23, 31)),
        [31],
    ]
    with torch.no_grad():
        assert bb(torch.rand(1, 3, 321, 321)).shape == (1, 1280, 41, 41)
        assert mobilenetv2(output_stride=32)(torch.rand(1, 3, 64, 64)).shape == (1, 1280, 2, 2)
    with pytest.raises(ValueError, match="output_stride"):
        mobilenetv2(output_stride=4)


@pytest.mark.parametrize(("output_stride", "side"), [(4, 16), (8, 8), (16, 4)])
def test_small_resnet(output_stride, side):
    bb = small_resnet(output_stride=output_stride)
    assert len(bb.blocks) == 5 and bb.coarse_groups == [[0], [1], [2], [3], [4]]
    assert 10_000 < sum(p.numel() for p in bb.parameters()) < 1_000_000
    assert bb(torch.rand(2, 3, 64, 64)).shape == (2, 128, side, side)


def test_small_resnet_options():
    bb = small_resnet(widths=(8, 16, 24, 32), layers=(2, 1, 1, 2))
    assert bb.coarse_groups == [[0], [1, 2], [3], [4], [5, 6]]
    assert bb(torch.rand(1, 3, 32, 32)).shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match="output_stride=3"):
        small_resnet(output_stride=3)
    with pytest.raises(ValueError, match="4 entries"):
        small_resnet(widths=(8, 16))


def test_backbone_registry():
    assert set(BACKBONES) == {"resnet34_deeplab", "mobilenetv2", "small_resnet", "vit_small"}


def _toy_backbone(num_coarse: int) -> Backbone:
    """A backbone from plain torch modules: one strided conv block per coarse block, 8 channels."""
    blocks = [
        torch.nn.Sequential(torch.nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        for i in range(num_coarse)
    ]
    return Backbone(blocks, [[i] for i in range(num_coarse)], out_channels=8, output_stride=2**num_coarse)


def test_backbone_with_the_wrong_number_of_coarse_blocks_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(BACKBONES, "toy3", lambda: _toy_backbone(3))
    expected = r"backbone 'toy3' must provide 5 coarse blocks \(stem \+ 4 stages\) as coarse_groups.*; got 3"
    with pytest.raises(ValueError, match=expected):
        build_model("toy3", TASKS, "all_shared")
    layout = all_shared(tuple(TASKS), 3)
    heads = {t: LightHead(8, c) for t, c in TASKS.items()}
    with pytest.raises(ValueError, match="must provide 5 coarse blocks .*; got 3"):
        MultiTaskModel(_toy_backbone(3), layout, heads)
    monkeypatch.setitem(BACKBONES, "not_a_backbone", lambda: torch.nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="backbone 'not_a_backbone' must be a mtl_robust.models.Backbone"):
        build_model("not_a_backbone", TASKS, "all_shared")


def test_a_plain_torch_backbone_that_keeps_the_contract_builds_and_runs(monkeypatch):
    monkeypatch.setitem(BACKBONES, "toy", lambda: _toy_backbone(5))
    model = build_model("toy", TASKS, "branch_at_2", seed=0)
    assert model.num_fine_blocks == 5 and model.feature_channels == 8
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert {t: tuple(y.shape) for t, y in out.items()} == {t: (2, c, 64, 64) for t, c in TASKS.items()}


# ----- heads and normalisation --------------------------------------------------------------------------
def test_aspp_head_sums_its_branches():
    head = ASPPHead(8, 4, hidden=16).eval()
    x = torch.rand(2, 8, 9, 9)
    assert [b.conv1.dilation[0] for b in head.branches] == [6, 12, 18, 24]
    assert head.branches[0].conv1.bias is not None
    with torch.no_grad():
        assert torch.allclose(head(x), sum(b(x) for b in head.branches), atol=1e-6)
    assert head(x).shape == (2, 4, 9, 9)


def test_light_head_upsampling():
    assert LightHead(8, 3)(torch.rand(2, 8, 5, 5)).shape == (2, 3, 5, 5)
    assert LightHead(8, 3, upsample_stages=2)(torch.rand(2, 8, 5, 5)).shape == (2, 3, 20, 20)


def test_normalization_presets():
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    caffe = InputNormalization("caffe")(red).flatten()
    # BGR order, x255, minus the BGR Caffe mean
    assert torch.allclose(caffe, torch.tensor([-104.00698793, -116.66876762, 255 - 122.67891434]))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    assert torch.allclose(InputNormalization("imagenet")(mean), torch.zeros(1, 3, 1, 1), atol=1e-7)
    one = InputNormalization("imagenet")(torch.ones(1, 3, 1, 1)).flatten()
    assert torch.allclose(one, torch.tensor([0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225]))
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(InputNormalization("none")(x), x)
    assert InputNormalization("caffe").state_dict() == {}
    with pytest.raises(ValueError, match="unknown normalization"):
        InputNormalization("zscore")


# ----- tree model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["all_shared", "independent", 47, 43])
def test_outputs_for_every_task_at_input_resolution(layout):
    model = _small(layout)
    out = model(torch.rand(2, 3, 40, 48))
    assert list(out) == ["seg", "normal", "depth"]
    for t, c in TASKS.items():
        assert out[t].shape == (2, c, 40, 48)
    assert model.tasks == ("seg", "normal", "depth")


def test_upsample_false_returns_head_resolution():
    model = _small("all_shared", upsample=False)
    assert model(torch.rand(1, 3, 32, 32))["seg"].shape == (1, 5, 4, 4)


def _call_counter(model):
    calls: dict[int, int] = {}
    modules = [m for blocks in model.branches for m in blocks] + list(model.heads.values())
    for m in modules:
        m.register_forward_hook(lambda mod, inp, out: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1))
    return calls


@pytest.mark.parametrize("layout", [43, 47, "independent"])
def test_single_task_forward_matches_and_runs_only_its_path(layout):
    model = _small(layout).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
    calls = _call_counter(model)
    # the full pass computes each group's output exactly once
    with torch.no_grad():
        model(x)
    total = sum(len(blocks) for blocks in model.branches) + len(model.heads)
    assert len(calls) == total and set(calls.values()) == {1}
    for t in TASKS:
        calls.clear()
        with torch.no_grad():
            single = model(x, tasks=[t])
        assert list(single) == [t]
        assert torch.allclose(single[t], full[t], atol=1e-6)
        assert set(calls) == {id(m) for m in model.task_modules(t)}
        assert set(calls.values()) == {1}


def test_two_task_subset_shares_group_computation():
    model = _small(47).eval()  # B0-B3 shared, B4: {seg} {normal,depth}
    calls = _call_counter(model)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32), tasks=("depth", "normal"))
    assert list(out) == ["depth", "normal"]
    # 5 fine blocks on the shared path (normal and depth share B4 too) + 2 heads
    assert len(calls) == 5 + 2 and set(calls.values()) == {1}


def test_parameter_sharing_is_real():
    shared, ind = _small("all_shared"), _small("independent")
    assert shared.parameter_count() < ind.parameter_count()
    assert ind.backbone_parameter_count() == 3 * shared.backbone_parameter_count()
    heads = sum(p.numel() for p in shared.heads.parameters())
    assert shared.parameter_count() == shared.backbone_parameter_count() + heads
    for f in range(shared.num_fine_blocks):
        assert shared.block_for("seg", f) is shared.block_for("normal", f) is shared.block_for("depth", f)
        assert ind.block_for("seg", f) is not ind.block_for("normal", f)
    lay47 = _small(47)
    assert lay47.block_for("seg", 3) is lay47.block_for("depth", 3)
    assert lay47.block_for("seg", 4) is not lay47.block_for("depth", 4)
    assert lay47.block_for("normal", 4) is lay47.block_for("depth", 4)
    # a task's own count covers exactly its path and head
    assert lay47.parameter_count("seg") == shared.parameter_count("seg")


def test_branches_start_identical_and_seed_is_reproducible():
    model = _small("independent")
    a, b = model.block_for("seg", 2), model.block_for("depth", 2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb) and pa is not pb
    again = _small("independent")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    other = _small("independent", seed=1)
    assert not torch.equal(other.block_for("seg", 0)[0].weight, model.block_for("seg", 0)[0].weight)


def test_seed_does_not_move_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _small("all_shared", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_spec_round_trip_rebuilds_identical_architecture():
    head = {"name": "light", "hidden": 12, "upsample_stages": 1}
    model = _small(43, head=head, normalization="caffe").eval()
    spec = json.loads(json.dumps(model.spec))
    assert spec["layout"] == from_index(43, tuple(TASKS), 5).to_list()
    rebuilt = build_model(**{**spec, "seed": 99}).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for t in TASKS:
            assert torch.allclose(model(x)[t], rebuilt(x)[t], atol=1e-6)
    assert rebuilt.layout == model.layout and rebuilt.normalization.preset == "caffe"


def test_layout_forms_give_the_same_model():
    a = _small(47)
    b = _small("B0-B3: {seg,normal,depth}; B4: {seg} {normal,depth}")
    sh = ["seg", "normal", "depth"]
    c = _small([[sh]] * 4 + [[["normal", "depth"], ["seg"]]])
    assert a.layout == b.layout == c.layout
    assert a.spec == b.spec == c.spec


def test_gradients_flow_to_input_and_only_used_heads():
    model = _small(43)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = model(x, tasks=["depth"])
    out["depth"].pow(2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.heads["seg"].parameters())
    assert all(p.grad is not None for p in model.heads["depth"].parameters())


def test_errors():
    model = _small("all_shared")
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['edges'\]"):
        model(x, tasks=["edges"])
    with pytest.raises(ValueError, match="empty"):
        model(x, tasks=[])
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("resnet50", TASKS, "all_shared")
    with pytest.raises(ValueError, match="unknown head"):
        build_model("small_resnet", TASKS, "all_shared", head="fpn")
    with pytest.raises(ValueError, match="bad arguments"):
        build_model({"name": "small_resnet", "depth": 3}, TASKS, "all_shared")
    with pytest.raises(ValueError, match="positive int"):
        build_model("small_resnet", {"seg": 0}, "all_shared")
    with pytest.raises(ValueError, match="4 blocks but the backbone has 5"):
        build_model("small_resnet", TASKS, [[["seg", "normal", "depth"]]] * 4)
    with pytest.raises(ValueError, match="only split"):
        build_model("small_resnet", TASKS, "B0: {seg} {normal,depth}; B1-B4: {seg,normal} {depth}")


def test_string_task_selects_one_task():
    model = _small(47).eval()
    x = torch.rand(1, 3, 16, 16)
    assert list(model(x, tasks="normal")) == ["normal"]


def test_mobilenet_tree_model_with_small_aspp():
    model = build_model(
        "mobilenetv2", {"seg": 4, "depth": 1}, "branch_at_2", head={"name": "aspp", "hidden": 8}, seed=0
    )
    assert model.num_fine_blocks == 32
    assert model.block_for("seg", 17) is model.block_for("depth", 17)
    assert model.block_for("seg", 18) is not model.block_for("depth", 18)
    out = model.eval()(torch.rand(1, 3, 48, 48))
    assert out["seg"].shape == (1, 4, 48, 48) and out["depth"].shape == (1, 1, 48, 48)


def test_five_task_layout_index():
    tasks = {"seg": 3, "normal": 3, "depth": 1, "keypoints": 1, "edges": 1}
    model = build_model({"name": "small_resnet", "widths": [4, 4, 8, 8]}, tasks, 4, seed=0)
    assert model.layout.sharing_score() == 0
    assert len(model.branches[0]) == 5


def test_paper_model_parameter_counts_on_meta_device():
    nyu = {"seg": 40, "normal": 3, "depth": 1}
    with torch.device("meta"):
        shared = build_model("resnet34_deeplab", nyu, "all_shared", head="aspp")
        ind = build_model("resnet34_deeplab", nyu, "independent", head="aspp")
    assert shared.backbone_parameter_count() == 21_284_672
    assert ind.backbone_parameter_count() == 3 * 21_284_672
    # per ASPP branch: conv3x3 512->1024 (+bias), conv1x1 1024->1024 (+bias), conv1x1 1024->C (+bias)
    per_branch = 512 * 1024 * 9 + 1024 + 1024 * 1024 + 1024
    heads = sum(4 * (per_branch + 1024 * c + c) for c in nyu.values())
    assert shared.parameter_count() == 21_284_672 + heads
