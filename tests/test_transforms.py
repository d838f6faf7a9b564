"""Joint transforms: nearest for targets, flip negates normal x, pad values, crop offsets, determinism."""

from __future__ import annotations

import pytest
import torch

from mtl_robust.data.transforms import (
    CAFFE_MEAN_RGB,
    Compose,
    RandomHorizontalFlip,
    RandomPadCrop,
    RandomScale,
    Resize,
    hflip,
    pad_and_crop,
    paper_test_transform,
    paper_train_transform,
    resize,
)

torch.set_num_threads(1)


def _sample(h: int = 4, w: int = 6) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, h, w, generator=g)
    seg = torch.arange(h * w, dtype=torch.int64).reshape(h, w) % 40
    normal = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
    depth = torch.rand(1, h, w, generator=g) + 0.5
    kp = torch.rand(1, h, w, generator=g) * 2 - 1
    return x, {"seg": seg, "normal": normal, "depth": depth, "keypoints": kp, "edges": kp.clone()}


def test_resize_labels_nearest_block_replication() -> None:
    x = torch.zeros(3, 2, 2)
    seg = torch.tensor([[1, 2], [3, 255]])
    normal = torch.zeros(3, 2, 2)
    normal[:, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    _, t = resize(x, {"seg": seg, "normal": normal}, (4, 4))
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 255, 255], [3, 3, 255, 255]])
    assert t["seg"].dtype == torch.int64
    assert torch.equal(t["seg"], expected)
    # no interpolation between a unit normal and an invalid (zero) one
    assert torch.equal(t["normal"][:, :2, :2], torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 2))
    assert torch.equal(t["normal"][:, 2:, :], torch.zeros(3, 2, 4))


def test_resize_downsample_picks_floor_index_like_opencv_nearest() -> None:
    seg = torch.tensor([[0, 1, 2, 3]])
    _, t = resize(torch.zeros(3, 1, 4), {"seg": seg}, (1, 2))
    assert t["seg"].tolist() == [[0, 2]]


def test_resize_image_bilinear_half_pixel_centres() -> None:
    x = torch.tensor([0.0, 1.0]).view(1, 1, 2).expand(3, 1, 2).contiguous()
    out, _ = resize(x, {}, (1, 4))
    assert torch.allclose(out[0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_hflip_negates_normal_x_and_flips_everything() -> None:
    x, t = _sample()
    fx, ft = hflip(x, t)
    assert torch.equal(fx, x.flip(-1))
    for k in ("seg", "depth", "keypoints", "edges"):
        assert torch.equal(ft[k], t[k].flip(-1))
    assert torch.equal(ft["normal"][0], -t["normal"][0].flip(-1))
    assert torch.equal(ft["normal"][1:], t["normal"][1:].flip(-1))
    assert torch.equal(t["normal"], _sample()[1]["normal"])  # input untouched


def test_hflip_without_negation_is_the_paper_codes_behaviour() -> None:
    x, t = _sample()
    _, ft = hflip(x, t, negate_normal_x=False)
    assert torch.equal(ft["normal"], t["normal"].flip(-1))


def test_random_flip_probability_extremes() -> None:
    x, t = _sample()
    fx, ft = RandomHorizontalFlip(p=1.0)(x, t)
    assert torch.equal(fx, x.flip(-1)) and torch.equal(ft["normal"][0], -t["normal"][0].flip(-1))
    fx, ft = RandomHorizontalFlip(p=0.0)(x, t)
    assert torch.equal(fx, x) and torch.equal(ft["normal"], t["normal"])


def test_pad_values_and_interior() -> None:
    x, t = _sample(2, 2)
    px, pt = pad_and_crop(x, t, (4, 4), 0, 0)
    border = torch.ones(4, 4, dtype=torch.bool)
    border[1:3, 1:3] = False  # centred padding, offset (1, 1)
    assert torch.equal(px[:, 1:3, 1:3], x)
    assert (px[:, border] == 0).all()
    assert torch.equal(pt["seg"][1:3, 1:3], t["seg"]) and (pt["seg"][border] == 255).all()
    assert pt["seg"].dtype == torch.int64
    assert (pt["normal"][:, border] == 0).all()
    assert (pt["depth"][:, border] == 0).all()
    assert (pt["keypoints"][:, border] == 255).all() and (pt["edges"][:, border] == 255).all()


def test_pad_with_mean_colour() -> None:
    x, t = _sample(2, 2)
    px, _ = pad_and_crop(x, t, (3, 3), 0, 0, image_pad="mean")
    assert torch.allclose(px[:, 2, 2], torch.tensor(CAFFE_MEAN_RGB))


def test_crop_offsets_cut_the_right_window() -> None:
    x, t = _sample(4, 6)
    cx, ct = pad_and_crop(x, t, (2, 3), top=1, left=2)
    assert torch.equal(cx, x[:, 1:3, 2:5])
    assert torch.equal(ct["seg"], t["seg"][1:3, 2:5])
    with pytest.raises(ValueError, match="outside"):
        pad_and_crop(x, t, (2, 3), top=3, left=0)


def test_random_scale_fixed_factor_and_int_truncation() -> None:
    x, t = _sample(4, 6)
    sx, st = RandomScale((1.5, 1.5))(x, t)
    assert sx.shape == (3, 6, 9) and st["seg"].shape == (6, 9) and st["normal"].shape == (3, 6, 9)
    sx, _ = RandomScale((0.6, 0.6))(x, t)
    assert sx.shape == (3, 2, 3)  # int(4 * 0.6), int(6 * 0.6)


def test_paper_train_output_size_from_small_and_large_inputs() -> None:
    g = torch.Generator().manual_seed(1)
    tf = paper_train_transform(size=(21, 17), generator=g)
    for h, w in ((8, 10), (48, 64)):
        x, t = _sample(h, w)
        ox, ot = tf(x, t)
        assert ox.shape == (3, 21, 17) and ot["seg"].shape == (21, 17) and ot["depth"].shape == (1, 21, 17)


def test_paper_test_resize_and_none_means_no_resize() -> None:
    x, t = _sample(4, 6)
    ox, ot = paper_test_transform(size=(8, 12))(x, t)
    assert ox.shape == (3, 8, 12) and ot["seg"].shape == (8, 12)
    ox, ot = paper_test_transform(size=None)(x, t)
    assert ox is x and ot["seg"] is t["seg"]
    ox, ot = paper_train_transform(size=None, scale_range=None, flip_p=0.0)(x, t)
    assert torch.equal(ox, x) and torch.equal(ot["seg"], t["seg"])
    assert Resize(None)(x, t)[0] is x


def test_seeded_generator_is_deterministic_and_seeds_differ() -> None:
    x, t = _sample(12, 16)

    def run(seed: int):
        tf = paper_train_transform(size=(9, 9), generator=torch.Generator().manual_seed(seed))
        return [tf(x, t) for _ in range(5)]

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1]["seg"], q[1]["seg"]) for p, q in zip(a, b))
    assert any(not torch.equal(p[0], q[0]) for p, q in zip(a, c))


def test_global_rng_used_without_generator() -> None:
    x, t = _sample(12, 16)
    tf = paper_train_transform(size=(9, 9))
    torch.manual_seed(11)
    a = [tf(x, t)[1]["seg"] for _ in range(4)]
    torch.manual_seed(11)
    b = [tf(x, t)[1]["seg"] for _ in range(4)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_random_pipeline_keeps_image_and_targets_aligned() -> None:
    """seg, depth and the image's column ramp come from the same geometry after scale/flip/pad/crop;
    the normal's x sign tells whether that sample was mirrored."""
    h, w = 16, 24
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    seg = (torch.arange(h).view(h, 1) // 4 * 6 + torch.arange(w).view(1, w) // 4).to(torch.int64)
    x = torch.stack([cols / (w - 1), torch.zeros(h, w), torch.zeros(h, w)])
    normal = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, h, w).contiguous()
    targets = {"seg": seg, "depth": (seg + 1).float()[None], "normal": normal}
    g = torch.Generator().manual_seed(0)
    tf = paper_train_transform(size=(20, 20), scale_range=(0.5, 1.5), generator=g)
    flips = set()
    for _ in range(20):
        ox, ot = tf(x, targets)
        valid = ot["seg"] != 255
        assert torch.equal(ot["depth"][0][valid], (ot["seg"][valid] + 1).float())
        assert (ot["depth"][0][~valid] == 0).all() and (ot["normal"][:, ~valid] == 0).all()
        sign = ot["normal"][0][valid]
        assert (sign == sign[0]).all() and sign[0].abs() == 1
        # image ramp direction within one valid row: increasing unless mirrored
        row = int(valid.any(1).nonzero()[0])
        ramp = ox[0, row][valid[row]]
        mirrored = bool(ramp[-1] < ramp[0])
        assert mirrored == bool(sign[0] < 0)
        flips.add(mirrored)
    assert flips == {True, False}


def test_compose_and_argument_validation() -> None:
    x, t = _sample()
    out = Compose([RandomHorizontalFlip(1.0), RandomHorizontalFlip(1.0)])(x, t)
    assert torch.equal(out[0], x) and torch.equal(out[1]["normal"], t["normal"])
    with pytest.raises(ValueError):
        RandomScale((0.0, 1.0))
    with pytest.raises(ValueError):
        RandomPadCrop((0, 4))
    with pytest.raises(ValueError):
        RandomPadCrop((4, 4), image_pad="grey")
    with pytest.raises(ValueError):
        RandomHorizontalFlip(p=1.5)
