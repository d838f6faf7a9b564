"""Tests of the procedurally rendered synthetic scenes (mtl_robust.data.synthetic)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtl_robust.data.synthetic import (
    CEILING,
    CLASS_NAMES,
    FLOOR,
    SPHERE,
    TASKS,
    WALL,
    SyntheticScenes,
    backproject_depth,
    camera_intrinsics,
    render_scenes,
)

torch.set_num_threads(1)

# Largest possible room is 8 x 3.2 x 8 m and the camera is inside it.
ROOM_DIAGONAL = math.sqrt(8.0**2 + 3.2**2 + 8.0**2)
ALL5 = ("seg", "normal", "depth", "keypoints", "edges")


@pytest.fixture(scope="module")
def five() -> SyntheticScenes:
    # Non-square on purpose: a swapped H/W anywhere shows up as a shape error.
    return SyntheticScenes(num_images=16, height=40, width=48, tasks=ALL5, seed=3)


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    return render_scenes([(7, 0, i) for i in range(24)], 64, 64, tasks=ALL5)


def _interior(seg: np.ndarray) -> np.ndarray:
    """[H-2, W-2] mask of pixels whose whole 3x3 neighbourhood has the same label."""
    h, w = seg.shape
    centre = seg[1:-1, 1:-1]
    same = np.ones_like(centre, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            same &= seg[1 + di : h - 1 + di, 1 + dj : w - 1 + dj] == centre
    return same


def _normals_from_depth(depth: np.ndarray, fov_deg: float = 60.0) -> np.ndarray:
    """Central-difference normals [H-2, W-2, 3] of the back-projected depth, oriented towards the camera."""
    p = backproject_depth(depth, fov_deg)
    du = p[1:-1, 2:] - p[1:-1, :-2]
    dv = p[2:, 1:-1] - p[:-2, 1:-1]
    n = np.cross(du, dv)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where((np.sum(n * p[1:-1, 1:-1], -1) > 0)[..., None], -n, n)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


# ----------------------------------------------------------------------------------------------------------
# contract: shapes, dtypes, ranges
# ----------------------------------------------------------------------------------------------------------


def test_default_item_shapes_dtypes_and_attributes() -> None:
    ds = SyntheticScenes(num_images=3, height=24, width=32)
    assert len(ds) == 3
    assert ds.tasks == ("seg", "normal", "depth")
    assert ds.num_classes == len(ds.class_names) == len(CLASS_NAMES) >= 6
    x, t = ds[0]
    assert set(t) == {"seg", "normal", "depth"}
    assert x.shape == (3, 24, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert t["seg"].shape == (24, 32) and t["seg"].dtype == torch.int64
    assert t["depth"].shape == (1, 24, 32) and t["depth"].dtype == torch.float32
    assert t["normal"].shape == (3, 24, 32) and t["normal"].dtype == torch.float32
    labels = t["seg"][t["seg"] != 255]  # 255: unlabelled pixels of the default invalid regions
    assert 0 <= int(labels.min()) and int(labels.max()) < ds.num_classes


def test_five_task_item_has_keypoints_and_edges_in_range(five: SyntheticScenes) -> None:
    assert five.tasks == ALL5
    kps, edges = [], []
    for i in range(len(five)):
        x, t = five[i]
        assert list(t) == list(ALL5)
        for name in ("keypoints", "edges"):
            assert t[name].shape == (1, 40, 48) and t[name].dtype == torch.float32
            assert 0.0 <= float(t[name].min()) and float(t[name].max()) <= 1.0
        kps.append(t["keypoints"])
        edges.append(t["edges"])
    kps, edges = torch.stack(kps), torch.stack(edges)
    # Blobs peak near 1 at visible corners and are sparse; edges are thin and use the documented levels.
    assert float(kps.max()) > 0.8
    assert 0.0 < float((kps > 0.5).float().mean()) < 0.1
    assert set(torch.unique(edges).tolist()) == {0.0, 0.5, 1.0}
    assert 0.01 < float((edges > 0).float().mean()) < 0.3


def test_dataloader_collates_to_batches(five: SyntheticScenes) -> None:
    x, t = next(iter(DataLoader(five, batch_size=4)))
    assert x.shape == (4, 3, 40, 48)
    assert t["seg"].shape == (4, 40, 48) and t["depth"].shape == (4, 1, 40, 48)
    assert t["normal"].shape == (4, 3, 40, 48) and t["keypoints"].shape == (4, 1, 40, 48)


def test_task_subset_and_order_are_respected() -> None:
    ds = SyntheticScenes(num_images=2, height=16, width=16, tasks=("edges", "depth"))
    _, t = ds[1]
    assert list(t) == ["edges", "depth"]


# ----------------------------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------------------------


def _equal_items(a, b) -> bool:
    return (
        torch.equal(a[0], b[0])
        and a[1].keys() == b[1].keys()
        and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    )


def test_same_seed_and_index_give_identical_items_independent_of_order_and_caching() -> None:
    kwargs = dict(height=20, width=28, tasks=ALL5, seed=11)
    cached = SyntheticScenes(num_images=6, cache=True, **kwargs)
    lazy = SyntheticScenes(num_images=6, cache=False, **kwargs)
    reversed_items = {i: lazy[i] for i in reversed(range(6))}
    for i in range(6):
        assert _equal_items(cached[i], reversed_items[i])
        assert _equal_items(cached[i], lazy[i])
    # Item i does not depend on the size of the set it belongs to.
    bigger = SyntheticScenes(num_images=40, **kwargs)
    for i in range(6):
        assert _equal_items(cached[i], bigger[i])
    assert _equal_items(cached[-1], cached[5])


def test_different_index_seed_or_split_give_different_images() -> None:
    kwargs = dict(num_images=4, height=16, width=16)
    a = SyntheticScenes(seed=0, **kwargs)
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[0][1]["depth"], a[1][1]["depth"])
    b = SyntheticScenes(seed=1, **kwargs)
    assert not torch.equal(a[0][1]["depth"], b[0][1]["depth"])
    val = SyntheticScenes(seed=0, split="val", **kwargs)
    for i in range(4):
        assert not torch.equal(a[i][1]["depth"], val[i][1]["depth"])


def test_noise_changes_pixels_but_not_targets() -> None:
    clean = SyntheticScenes(num_images=2, height=16, width=16, noise_std=0.0)
    noisy = SyntheticScenes(num_images=2, height=16, width=16, noise_std=0.05)
    diff = (noisy[0][0] - clean[0][0]).abs()
    assert 0.01 < float(diff.mean()) < 0.08
    for k in clean.tasks:
        assert torch.equal(clean[0][1][k], noisy[0][1][k])


def test_render_scenes_is_independent_of_batch_composition() -> None:
    seeds = [(5, 0, i) for i in range(20)]
    together = render_scenes(seeds, 16, 24, tasks=ALL5)
    alone = render_scenes([seeds[13]], 16, 24, tasks=ALL5)
    for k in together:
        assert np.array_equal(together[k][13], alone[k][0]), k


# ----------------------------------------------------------------------------------------------------------
# geometry: classes, depth, normals agree with depth
# ----------------------------------------------------------------------------------------------------------


def test_all_classes_appear_over_a_few_images(batch: dict[str, np.ndarray]) -> None:
    present = set(np.unique(batch["seg"]).tolist())
    assert len(present) >= 6
    assert {0, 1, 2, 3, 4, 5} <= present


def test_depth_is_positive_and_within_the_room(batch: dict[str, np.ndarray]) -> None:
    depth = batch["depth"]
    assert np.isfinite(depth).all()
    assert depth.min() > 0.05
    # z-depth is at most the distance to the point, which is at most the room diagonal.
    assert depth.max() < ROOM_DIAGONAL
    # Cameras stand 1.1-1.8 m high inside rooms at least 4 m wide: something is always a few metres away.
    assert np.all(depth.reshape(len(depth), -1).max(axis=1) > 1.5)


def test_normals_are_unit_and_face_the_camera(batch: dict[str, np.ndarray]) -> None:
    n = batch["normal"]
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    for i in range(len(n)):
        p = backproject_depth(batch["depth"][i, 0])
        assert np.all(np.sum(n[i].transpose(1, 2, 0) * p, axis=-1) < 0)


def test_normals_agree_with_depth_on_planar_and_curved_surfaces(batch: dict[str, np.ndarray]) -> None:
    planar, spheres, walls = [], [], []
    for i in range(len(batch["depth"])):
        est = _normals_from_depth(batch["depth"][i, 0])
        gt = batch["normal"][i].transpose(1, 2, 0)[1:-1, 1:-1]
        seg = batch["seg"][i]
        inner = _interior(seg)
        ang = _angle_deg(est, gt)
        centre = seg[1:-1, 1:-1]
        planar.append(ang[inner & ((centre == FLOOR) | (centre == CEILING))])
        spheres.append(ang[inner & (centre == SPHERE)])
        walls.append(ang[inner & (centre == WALL)])
    planar, spheres, walls = (np.concatenate(a) for a in (planar, spheres, walls))
    assert planar.size > 1000 and spheres.size > 100
    # Floor and ceiling are single planes: finite differences are exact up to float32 rounding.
    assert planar.max() < 0.5
    # Walls are four planes; only pixels straddling a wall-wall corner (same label) may disagree.
    assert np.median(walls) < 0.1 and np.mean(walls < 1.0) > 0.9
    # On a sphere the 3x3 central difference has a small curvature error.
    assert np.median(spheres) < 2.0


def test_floor_and_ceiling_are_consistent_planes(batch: dict[str, np.ndarray]) -> None:
    """All floor points lie on one plane at camera height; ceiling is parallel at room height."""
    checked = 0
    for i in range(len(batch["depth"])):
        seg = batch["seg"][i]
        floor, ceiling = seg == FLOOR, seg == CEILING
        if floor.sum() < 10 or ceiling.sum() < 10:
            continue
        p = backproject_depth(batch["depth"][i, 0])
        n = batch["normal"][i].transpose(1, 2, 0).astype(np.float64)
        n_floor, n_ceiling = n[floor].mean(axis=0), n[ceiling].mean(axis=0)
        np.testing.assert_allclose(n[floor], np.broadcast_to(n_floor, n[floor].shape), atol=1e-5)
        np.testing.assert_allclose(n_floor, -n_ceiling, atol=1e-5)
        cam_height = -(p[floor] @ n_floor)
        to_ceiling = -(p[ceiling] @ n_ceiling)
        assert np.ptp(cam_height) < 1e-3 and np.ptp(to_ceiling) < 1e-3
        assert 1.1 - 1e-3 <= cam_height.mean() <= 1.8 + 1e-3
        assert 2.5 - 1e-3 <= cam_height.mean() + to_ceiling.mean() <= 3.2 + 1e-3
        # Walls are vertical: perpendicular to the floor normal.
        assert np.abs(n[seg == WALL] @ n_floor).max() < 1e-4
        checked += 1
    assert checked >= 3


def test_edges_mark_label_boundaries(batch: dict[str, np.ndarray]) -> None:
    seg, edges = batch["seg"], batch["edges"][:, 0]
    change = seg[:, :, 1:] != seg[:, :, :-1]
    # Both pixels on either side of a label change are full-strength edges.
    assert np.all(edges[:, :, 1:][change] == 1.0) and np.all(edges[:, :, :-1][change] == 1.0)
    # Inside a region of one label whose 3x3 neighbourhood has no edge, nothing is marked.
    assert edges.mean() < 0.2


def test_keypoints_sit_on_geometric_corners(batch: dict[str, np.ndarray]) -> None:
    """A keypoint peak is where surfaces meet: its neighbourhood holds several labels or an edge."""
    kp, edges = batch["keypoints"][:, 0], batch["edges"][:, 0]
    peaks = 0
    for i in range(len(kp)):
        h, w = kp[i].shape
        for r, c in zip(*np.nonzero(kp[i] > 0.9)):
            window = edges[i, max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3]
            assert window.max() > 0.0
            peaks += 1
    assert peaks >= 10


# ----------------------------------------------------------------------------------------------------------
# helpers and errors
# ----------------------------------------------------------------------------------------------------------


def test_intrinsics_and_backprojection_hand_computed() -> None:
    fx, fy, cx, cy = camera_intrinsics(48, 64, fov_deg=90.0)
    assert (fx, fy, cx, cy) == pytest.approx((32.0, 32.0, 32.0, 24.0))
    # 2x2 image, 90 degrees: f = 1, principal point (1, 1); pixel (0, 0) is sampled at (0.5, 0.5).
    p = backproject_depth(np.full((2, 2), 2.0), fov_deg=90.0)
    np.testing.assert_allclose(p[0, 0], [-1.0, 1.0, -2.0])
    np.testing.assert_allclose(p[1, 1], [1.0, -1.0, -2.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tasks=("seg", "surface")), "unknown task"),
        (dict(tasks=()), "at least one"),
        (dict(tasks="seg"), "sequence of task names"),
        (dict(tasks=("seg", "seg")), "duplicates"),
        (dict(height=0), "height"),
        (dict(width=-4), "width"),
        (dict(height=12.5), "height"),
        (dict(num_images=0), "num_images"),
        (dict(seed=-1), "seed"),
        (dict(split="valid"), "split"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(fov_deg=180.0), "fov_deg"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs: dict, match: str) -> None:
    args = dict(num_images=1, height=8, width=8) | kwargs
    with pytest.raises(ValueError, match=match):
        SyntheticScenes(**args)


def test_render_scenes_rejects_bad_input_and_index_errors() -> None:
    with pytest.raises(ValueError, match="seeds is empty"):
        render_scenes([], 8, 8)
    with pytest.raises(ValueError, match="unknown task"):
        render_scenes([0], 8, 8, tasks=("depth", "albedo"))
    with pytest.raises(ValueError, match="2-D"):
        backproject_depth(np.ones((1, 4, 4)))
    ds = SyntheticScenes(num_images=2, height=8, width=8)
    with pytest.raises(IndexError):
        ds[2]
    assert set(TASKS) == set(ALL5)


def test_default_sized_set_renders_in_seconds() -> None:
    start = time.perf_counter()
    SyntheticScenes(num_images=128, height=64, width=64, tasks=ALL5)
    # About 0.25 s on one thread; the bound leaves room for a busy shared machine.
    assert time.perf_counter() - start < 10.0
