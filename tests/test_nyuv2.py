"""NYUv2 readers (AdaShare and MTAN formats) on generated files, errors, and the real sample frames."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtl_robust.data.errors import DataFormatError, DataRootError
from mtl_robust.data.nyuv2 import NYUv2, decode_adashare_normal, encode_adashare_normal
from mtl_robust.data.transforms import paper_train_transform
from tests.fakes_formats import write_nyuv2_adashare, write_nyuv2_mtan, write_png

torch.set_num_threads(1)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyuv2_adashare_samples"


# ------------------------------------------------------------------------------------- normal decoding


def _decode_pixels(pixels: list[tuple[int, int, int]], invalid: str = "any_255") -> np.ndarray:
    return decode_adashare_normal(np.array([pixels], dtype=np.uint8), invalid)[:, 0, :].T  # [N, 3]


def test_normal_decoding_axis_mapping_hand_values() -> None:
    # Pillow order (R, G, B); output (x right, y up, z towards camera) = (R, B, -G) after p / 127.5 - 1
    r = 254 / 127.5 - 1  # 0.99216
    e = 127 / 127.5 - 1  # -0.00392
    out = _decode_pixels([(254, 127, 0), (127, 0, 127), (127, 127, 254)])
    raw = np.array([[r, -1.0, -e], [e, e, 1.0], [e, r, -e]])
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[1, 2] > 0.999  # G = 0 encodes a surface facing the camera
    assert out[2, 1] > 0.999  # B = 254 encodes "up"


def test_normal_invalid_rules() -> None:
    pix = [(255, 127, 0), (255, 255, 255), (127, 127, 127), (254, 254, 254)]
    out = _decode_pixels(pix, "any_255")
    assert (out[:3] == 0).all()  # saturated channel, white, and the n = 0 code (127,127,127)
    np.testing.assert_allclose(np.linalg.norm(out[3]), 1.0, atol=1e-6)
    out = _decode_pixels(pix, "white")
    # (255,127,0): v = (1, -1/255, -1) -> (x, y, z) = (1, -1, 1/255), normalised
    raw = np.array([1.0, -1.0, 1 / 255])
    np.testing.assert_allclose(out[0], raw / np.linalg.norm(raw), atol=1e-6)
    assert (out[1:3] == 0).all()


def test_encode_decode_round_trip() -> None:
    rng = np.random.default_rng(0)
    n = rng.normal(size=(3, 5, 7))
    n /= np.linalg.norm(n, axis=0, keepdims=True)
    n[:, 0, 0] = 0.0
    back = decode_adashare_normal(encode_adashare_normal(n))
    assert (back[:, 0, 0] == 0).all()
    cos = (back * n).sum(0)[1:]
    assert cos.min() > 0.9995


# ------------------------------------------------------------------------------------- adashare format


@pytest.fixture
def ada(tmp_path: Path) -> Path:
    return write_nyuv2_adashare(tmp_path / "nyu", n_train=3, n_test=2, height=12, width=16)


def test_adashare_splits_shapes_and_dtypes(ada: Path) -> None:
    train, test, every = NYUv2(ada, "train"), NYUv2(ada, "test"), NYUv2(ada, "all")
    assert (len(train), len(test), len(every)) == (3, 2, 5)
    assert len(NYUv2(ada, None)) == 5 and len(NYUv2(ada, "val")) == 2
    assert test.names == ["0003", "0004"] and train.num_classes == 40 and len(train.class_names) == 40
    x, t = train[0]
    assert x.shape == (3, 12, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert list(t) == ["seg", "normal", "depth"]
    assert t["seg"].shape == (12, 16) and t["seg"].dtype == torch.int64
    assert t["normal"].shape == (3, 12, 16) and t["depth"].shape == (1, 12, 16)
    assert t["depth"].dtype == torch.float32 and t["normal"].dtype == torch.float32


def test_adashare_exact_values(ada: Path) -> None:
    img = np.arange(12 * 16 * 3, dtype=np.int64).reshape(12, 16, 3) % 256
    write_png(ada / "img/0000.png", img)
    seg = np.zeros((12, 16), dtype=np.uint8)
    seg[0, 0], seg[0, 1], seg[0, 2] = 255, 39, 7
    write_png(ada / "seg/0000.png", seg)
    nm = np.full((12, 16, 3), 255, dtype=np.uint8)
    nm[0, 0] = (127, 0, 127)
    write_png(ada / "normal_mask/0000.png", nm)
    depth = np.full((12, 16), 2.5, dtype=np.float32)
    depth[0, 1], depth[0, 2], depth[0, 3] = 0.0, np.nan, -1.0
    np.save(ada / "depth/0000.npy", depth)
    x, t = NYUv2(ada, "train")[0]
    assert torch.allclose(x, torch.from_numpy(img.transpose(2, 0, 1)).float() / 255)
    assert t["seg"][0, :3].tolist() == [255, 39, 7] and t["seg"][1:].eq(0).all()
    assert t["normal"][2, 0, 0] > 0.999
    assert (t["normal"][:, 1:] == 0).all() and (t["normal"][:, 0, 1:] == 0).all()
    assert t["depth"][0, 0, :4].tolist() == [2.5, 0.0, 0.0, 0.0]


def test_adashare_label_out_of_range_is_reported(ada: Path) -> None:
    seg = np.full((12, 16), 40, dtype=np.uint8)
    write_png(ada / "seg/0000.png", seg)
    with pytest.raises(DataFormatError, match="0..39"):
        NYUv2(ada, "train")[0]


def test_adashare_tasks_subset_needs_only_its_files(ada: Path) -> None:
    for f in (ada / "seg").iterdir():
        f.unlink()
    ds = NYUv2(ada, "train", tasks=("depth", "normal"))
    assert ds.tasks == ("depth", "normal") and list(ds[0][1]) == ["depth", "normal"]
    with pytest.raises(DataRootError, match="do not exist"):
        NYUv2(ada, "train")


def test_adashare_without_json_pairs_by_stem(tmp_path: Path) -> None:
    root = write_nyuv2_adashare(tmp_path / "nj", n_train=2, n_test=1, height=8, width=8, with_json=False)
    ds = NYUv2(root, split="all")
    assert len(ds) == 3 and ds.names == ["0000", "0001", "0002"] and ds.split == "all"
    assert len(NYUv2(root, split=None)) == 3 and len(NYUv2(root, split="test")) == 3
    with pytest.raises(DataRootError, match="split='all'"):
        NYUv2(root, split="train")
    write_png(root / "img/0099.png", np.zeros((8, 8, 3)))  # no partner in the other folders
    with pytest.warns(UserWarning, match="1 file stem"):
        assert len(NYUv2(root, split="all")) == 3


def test_adashare_json_entry_pointing_at_missing_file(ada: Path) -> None:
    (ada / "depth/0001.npy").unlink()
    with pytest.raises(DataRootError) as err:
        NYUv2(ada, "train")
    msg = str(err.value)
    assert "depth/0001.npy" in msg and "nyu_v2_3task.json" in msg and "data.root=" in msg
    ds = NYUv2(ada, "train", check_files=False)  # lazily: reported when the frame is read
    ds[0]
    with pytest.raises(DataRootError, match="0001.npy"):
        ds[1]


def test_adashare_malformed_json(ada: Path) -> None:
    (ada / "nyu_v2_3task.json").write_text(json.dumps({"train": [["img/0000.png"]], "test": []}))
    with pytest.raises(DataFormatError, match=r"train\[0\]"):
        NYUv2(ada, "train")
    (ada / "nyu_v2_3task.json").write_text(json.dumps({"training": []}))
    with pytest.raises(DataFormatError, match="'train'"):
        NYUv2(ada, "train")


def test_adashare_shape_mismatch(ada: Path) -> None:
    np.save(ada / "depth/0000.npy", np.ones((6, 8), dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"depth is \(6, 8\) but the image is \(12, 16\)"):
        NYUv2(ada, "train")[0]


def test_missing_root_gives_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as err:
        NYUv2(tmp_path / "nope", "train")
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    for needle in (
        "does not exist",
        str(tmp_path / "nope"),
        "nyu_v2_3task.json",
        "img/",
        "normal_mask/",
        "depth/",
        "sunxm2357/AdaShare",
        "zhanglijun95/TreeMTL",
        "data.root=/path",
    ):
        assert needle in msg, needle


def test_empty_root_lists_missing_json_and_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataRootError) as err:
        NYUv2(tmp_path / "empty", "all")
    msg = str(err.value)
    assert "nyu_v2_3task.json is missing" in msg and "img/, seg/, normal_mask/, depth/" in msg


def test_bad_arguments(ada: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        NYUv2(ada, tasks=("seg", "keypoints"))
    with pytest.raises(ValueError, match="format"):
        NYUv2(ada, format="astmt")
    with pytest.raises(ValueError, match="split"):
        NYUv2(ada, split="validation")


def test_adashare_with_paper_transform_and_collate(ada: Path) -> None:
    tf = paper_train_transform(size=(10, 10), generator=torch.Generator().manual_seed(0))
    ds = NYUv2(ada, "train", transform=tf)
    x, t = next(iter(DataLoader(ds, batch_size=3)))
    assert x.shape == (3, 3, 10, 10) and t["seg"].shape == (3, 10, 10)
    assert t["normal"].shape == (3, 3, 10, 10) and t["depth"].shape == (3, 1, 10, 10)


# ------------------------------------------------------------------------------------------ mtan format


@pytest.fixture
def mtan(tmp_path: Path) -> Path:
    return write_nyuv2_mtan(tmp_path / "mtan", n_train=3, n_val=2, height=6, width=8)


def test_mtan_splits_and_values(mtan: Path) -> None:
    ds = NYUv2(mtan, "test", format="mtan")
    assert ds.split == "val" and len(ds) == 2 and ds.num_classes == 13 and len(ds.class_names) == 13
    assert len(NYUv2(mtan, "train", format="mtan")) == 3 and len(NYUv2(mtan, "all", format="mtan")) == 5
    img = np.random.default_rng(1).random((6, 8, 3)).astype(np.float32)
    label = np.full((6, 8), 3.0, dtype=np.float32)
    label[0, 0], label[0, 1] = -1.0, 12.0
    depth = np.full((6, 8, 1), 1.5, dtype=np.float32)
    depth[0, 0, 0] = 0.0
    normal = np.zeros((6, 8, 3), dtype=np.float32)
    normal[1, 1] = (0.6, 0.0, 0.8)
    for sub, arr in (("image", img), ("label", label), ("depth", depth), ("normal", normal)):
        np.save(mtan / "val" / sub / "1.npy", arr)
    x, t = ds[1]
    assert torch.equal(x, torch.from_numpy(img.transpose(2, 0, 1)))
    assert t["seg"][0, :3].tolist() == [255, 12, 3] and t["seg"].dtype == torch.int64
    assert t["depth"].shape == (1, 6, 8) and t["depth"][0, 0, :2].tolist() == [0.0, 1.5]
    assert torch.allclose(t["normal"][:, 1, 1], torch.tensor([0.6, 0.0, 0.8]))
    assert (t["normal"].abs().sum(0) > 0).sum() == 1


def test_mtan_numeric_order_and_missing_folder(mtan: Path, tmp_path: Path) -> None:
    root = write_nyuv2_mtan(tmp_path / "m12", n_train=12, n_val=1, height=2, width=2)
    lbl = np.full((2, 2), 11.0, dtype=np.float32)
    np.save(root / "train/label/10.npy", lbl)
    ds = NYUv2(root, "train", format="mtan")
    assert ds.names[:3] == ["0", "1", "2"] and ds[10][1]["seg"].eq(11).all()
    shutil.rmtree(mtan / "val" / "normal")
    with pytest.raises(DataRootError) as err:
        NYUv2(mtan, "val", format="mtan")
    msg = str(err.value)
    assert "val/normal/" in msg and "lorenmt/mtan" in msg and "data.root=" in msg
    assert len(NYUv2(mtan, "val", format="mtan", tasks=("seg", "depth"))) == 2


# ----------------------------------------------------------------------------------------- real frames


@pytest.fixture(scope="module")
def real() -> NYUv2:
    if not REAL.is_dir():
        pytest.skip(f"real NYUv2 sample frames not found at {REAL} (shared data folder absent)")
    return NYUv2(REAL, split="all")


def _depth_normals(depth: np.ndarray, k: int = 4) -> np.ndarray:
    """Normals from depth (standard NYUv2 intrinsics) in (x right, y up, z towards camera), cropped by k."""
    fx, fy, cx, cy = 518.86, 519.47, 325.58, 253.74
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    p = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)
    du = p[k:-k, 2 * k :] - p[k:-k, : -2 * k]
    dv = p[2 * k :, k:-k] - p[: -2 * k, k:-k]
    n = np.cross(du, dv)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    n[(n * p[k:-k, k:-k]).sum(-1) > 0] *= -1  # face the camera
    return np.stack([n[..., 0], -n[..., 1], -n[..., 2]])


def test_real_frames_load_with_expected_ranges(real: NYUv2) -> None:
    assert len(real) == 4 and real.names == ["0061", "0295", "0774", "1314"]
    dmin, dmax = math.inf, 0.0
    for i in range(4):
        x, t = real[i]
        assert x.shape == (3, 480, 640) and t["seg"].shape == (480, 640)
        seg = t["seg"]
        labels = set(seg.unique().tolist())
        assert labels <= set(range(40)) | {255} and len(labels - {255}) >= 5
        assert 0.05 < (seg == 255).float().mean() < 0.3
        d = t["depth"]
        assert (d > 0).all()  # these frames have no invalid depth
        dmin, dmax = min(dmin, float(d.min())), max(dmax, float(d.max()))
        n = t["normal"]
        valid = n.abs().sum(0) > 0
        assert 0.5 < valid.float().mean() < 0.85
        assert torch.allclose(n.norm(dim=0)[valid], torch.ones(()), atol=1e-5)
    assert 0.65 < dmin < 0.75 and 6.8 < dmax < 6.9


def test_real_floor_points_up_and_walls_face_camera(real: NYUv2) -> None:
    checked = 0
    for i in range(4):
        _, t = real[i]
        seg, n = t["seg"], t["normal"]
        valid = n.abs().sum(0) > 0
        bottom = seg[-60:]
        counts = torch.bincount(bottom[bottom != 255], minlength=40)
        if int(counts.argmax()) == 1:  # NYU40 index 1 = floor dominates the bottom rows
            floor = (seg == 1) & valid
            assert n[1][floor].mean() > 0.8, real.names[i]
            assert n[1][floor].median() > 0.9
            checked += 1
        wall = (seg == 0) & valid
        assert n[2][wall].mean() > 0.6  # index 0 = wall, mostly facing the camera
    assert checked == 3  # 0295, 0774, 1314 (0061 shows no floor)
    _, t = real[1]
    ceiling = (t["seg"] == 21) & (t["normal"].abs().sum(0) > 0)
    assert t["normal"][1][ceiling].mean() < -0.7


def test_real_normals_match_depth_geometry_only_in_chosen_axes(real: NYUv2) -> None:
    """Of all 48 signed axis permutations, the chosen convention is the closest to depth-derived normals."""
    for i in range(4):
        _, t = real[i]
        ref = _depth_normals(t["depth"][0].numpy().astype(np.float64))
        n = t["normal"].numpy()[:, 4:-4, 4:-4]
        valid = np.abs(n).sum(0) > 0
        angles = {}
        for perm in itertools.permutations(range(3)):
            for signs in itertools.product((1, -1), repeat=3):
                m = np.stack([signs[j] * n[perm[j]][valid] for j in range(3)])
                cos = np.clip((m * ref[:, valid]).sum(0), -1, 1)
                angles[(perm, signs)] = float(np.degrees(np.median(np.arccos(cos))))
        chosen = angles[((0, 1, 2), (1, 1, 1))]
        assert chosen < 22.0, (real.names[i], chosen)
        assert chosen == min(angles.values()), real.names[i]
