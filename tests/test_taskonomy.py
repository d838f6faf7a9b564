"""Tiny-Taskonomy reader (AdaShare/TreeMTL format) on generated files: decoding, layout, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_robust.data.errors import DataFormatError, DataRootError
from mtl_robust.data.taskonomy import Taskonomy
from mtl_robust.data.transforms import paper_test_transform
from tests.fakes_formats import write_png, write_png16, write_taskonomy_adashare

torch.set_num_threads(1)


@pytest.fixture
def tk(tmp_path: Path) -> Path:
    return write_taskonomy_adashare(tmp_path / "tk", n_train=2, n_test=3, n_test_small=2, size=16)


def _entry(root: Path, split: str, i: int = 0) -> list[Path]:
    rel = json.loads((root / "taskonomy.json").read_text())[split][i]
    base = root / ("train" if split == "train" else "test")
    return [base / r for r in rel]


def _write_row(root: Path, seg=None, normal=None, depth=None, kp=None, edge=None) -> None:
    """Overwrite test entry 0 with 1 x W images (other files resized to match)."""
    rgb, s, n, d, k, e = _entry(root, "test")
    w = len(depth if depth is not None else [0] * 6)
    write_png(rgb, np.full((1, w, 3), 200))
    write_png(s, np.array([seg if seg is not None else [1] * w]))
    write_png(n, np.array([normal if normal is not None else [(128, 128, 255)] * w]))
    write_png16(d, np.array([depth if depth is not None else [1000] * w]))
    write_png16(k, np.array([kp if kp is not None else [0] * w]))
    write_png16(e, np.array([edge if edge is not None else [0] * w]))


def test_splits_shapes_and_base_resize(tk: Path) -> None:
    lengths = [len(Taskonomy(tk, s)) for s in ("train", "test", "test_small")]
    assert lengths == [2, 3, 2]
    ds = Taskonomy(tk, "test_small")
    assert ds.base_dir == tk / "test" and ds.num_classes == 17
    assert ds.tasks == ("seg", "normal", "depth", "keypoints", "edges")
    assert Taskonomy(tk, "train").base_dir == tk / "train"
    x, t = ds[0]
    assert x.shape == (3, 256, 256) and x.dtype == torch.float32
    assert t["seg"].shape == (256, 256) and t["seg"].dtype == torch.int64
    assert t["normal"].shape == (3, 256, 256)
    for k in ("depth", "keypoints", "edges"):
        assert t[k].shape == (1, 256, 256) and t[k].dtype == torch.float32
    x, t = Taskonomy(tk, "test", base_size=None)[0]
    assert x.shape == (3, 16, 16) and t["seg"].shape == (16, 16)


def test_class_weights_from_prior_factor(tk: Path) -> None:
    w = Taskonomy(tk, "train").class_weights
    assert w is not None and w.shape == (17,) and w.dtype == torch.float32
    assert torch.allclose(w, torch.linspace(0.5, 2.0, 17))
    np.save(tk / "semseg_prior_factor.npy", np.ones(5))
    with pytest.raises(DataFormatError, match="17 weights"):
        Taskonomy(tk, "train")
    (tk / "semseg_prior_factor.npy").unlink()
    with pytest.warns(UserWarning, match="class_weights is None"):
        assert Taskonomy(tk, "train").class_weights is None


def test_seg_remap_merge_and_ignore(tk: Path) -> None:
    _write_row(tk, seg=[0, 1, 2, 17, 255, 9])
    _, t = Taskonomy(tk, "test", base_size=None, tasks=("seg",))[0]
    assert t["seg"][0].tolist() == [0, 0, 1, 16, 255, 8]
    _, t = Taskonomy(tk, "test", base_size=None, tasks=("seg",), seg_raw_zero="ignore")[0]
    assert t["seg"][0].tolist() == [255, 0, 1, 16, 255, 8]
    _write_row(tk, seg=[0, 18, 1, 1, 1, 1])
    with pytest.raises(DataFormatError, match=r"\[18\]"):
        Taskonomy(tk, "test", base_size=None, tasks=("seg",))[0]


def test_depth_validity_and_both_encodings(tk: Path) -> None:
    raw = [0, 512, 1024, 64499, 64500, 65535]
    _write_row(tk, depth=raw)
    _, t = Taskonomy(tk, "test", base_size=None, tasks=("depth",))[0]
    expected_log = [math.log(1 + r) / math.log(2**16) if r < 64500 else 0.0 for r in raw]
    assert torch.allclose(t["depth"][0, 0], torch.tensor(expected_log), atol=1e-6)
    assert t["depth"][0, 0, 1] == pytest.approx(math.log(513) / (16 * math.log(2)), abs=1e-6)
    _, t = Taskonomy(tk, "test", base_size=None, tasks=("depth",), depth_encoding="metres")[0]
    assert torch.allclose(t["depth"][0, 0], torch.tensor([0.0, 1.0, 2.0, 64499 / 512, 0.0, 0.0]))


def test_normal_decoding_and_depth_mask(tk: Path) -> None:
    pixels = [(255, 128, 0), (128, 128, 255), (0, 0, 0), (128, 128, 128), (255, 0, 0), (0, 255, 0)]
    _write_row(tk, normal=pixels, depth=[100, 100, 100, 100, 65535, 64500])
    _, t = Taskonomy(tk, "test", base_size=None, tasks=("normal",))[0]
    n = t["normal"][:, 0, :]
    v = torch.tensor([1.0, 128 / 255 * 2 - 1, -1.0])
    assert torch.allclose(n[:, 0], v / v.norm(), atol=1e-6)
    v = torch.tensor([128 / 255 * 2 - 1, 128 / 255 * 2 - 1, 1.0])
    assert torch.allclose(n[:, 1], v / v.norm(), atol=1e-6)
    assert torch.allclose(n[:, 2], -torch.ones(3) / math.sqrt(3), atol=1e-6)
    assert (n[:, 3:] == 0).all()  # (128,128,128) ~ zero vector; last two: invalid depth


def test_keypoint_and_edge_scaling(tk: Path) -> None:
    _write_row(tk, kp=[0, 164, 327, 328, 40000, 65535], edge=[0, 2621, 5242, 5243, 30000, 65535])
    _, t = Taskonomy(tk, "test", base_size=None, tasks=("keypoints", "edges"))[0]

    def expected(raw: list[int], hi: float) -> torch.Tensor:
        return torch.tensor([min(r / 65536, hi) / hi * 2 - 1 for r in raw])

    kp, ed = t["keypoints"][0, 0], t["edges"][0, 0]
    assert torch.allclose(kp, expected([0, 164, 327, 328, 40000, 65535], 0.005), atol=1e-6)
    assert torch.allclose(ed, expected([0, 2621, 5242, 5243, 30000, 65535], 0.08), atol=1e-6)
    assert kp[0] == -1 and kp[3:].eq(1).all() and ed[0] == -1 and ed[3:].eq(1).all()
    assert abs(float(kp[1])) < 2e-3 and abs(float(ed[1])) < 1e-3  # mid-range maps near 0


def test_base_resize_is_nearest(tk: Path) -> None:
    _write_row(tk, seg=[1, 2, 3, 4, 5, 6], depth=[512, 1024, 1536, 2048, 2560, 3072])
    _, t = Taskonomy(tk, "test", base_size=(2, 12), tasks=("seg", "depth"), depth_encoding="metres")[0]
    assert t["seg"][0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert t["depth"][0, 1].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]


def test_train_transform_shortcut(tk: Path) -> None:
    x, t = Taskonomy(tk, "train", train_transform=True)[0]
    assert x.shape == (3, 224, 224) and t["keypoints"].shape == (1, 224, 224)
    x, t = Taskonomy(tk, "test_small", train_transform=False)[0]
    assert x.shape == (3, 224, 224) and t["seg"].shape == (224, 224)
    with pytest.raises(ValueError, match="not both"):
        Taskonomy(tk, "train", train_transform=True, transform=paper_test_transform((8, 8)))


def test_adashare_original_layout_rooted_at_root(tk: Path, tmp_path: Path) -> None:
    """AdaShare's loader joins entry paths to <root> itself; the reader accepts that layout too."""
    root = tmp_path / "flat"
    root.mkdir()
    for name in ("taskonomy.json", "semseg_prior_factor.npy"):
        (tk / name).rename(root / name)
    (tk / "test" / "collierville").rename(root / "collierville")
    ds = Taskonomy(root, "test")
    assert ds.base_dir == root and ds[0][0].shape == (3, 256, 256)


def test_errors_missing_root_json_and_files(tk: Path, tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as err:
        Taskonomy(tmp_path / "none", "train")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for needle in (
        "does not exist",
        "taskonomy.json",
        "semseg_prior_factor.npy",
        "train/",
        "test/",
        "TreeMTL",
        "data.root=/path",
    ):
        assert needle in msg, needle
    (tmp_path / "emptyroot").mkdir()
    with pytest.raises(DataRootError, match="taskonomy.json is missing"):
        Taskonomy(tmp_path / "emptyroot", "train")
    rgb, seg, *_ = _entry(tk, "test", 1)
    seg.unlink()
    ds = Taskonomy(tk, "test")
    with pytest.raises(DataRootError, match=r"test\[1\].*segmentsemantic"):
        ds[1]
    with pytest.raises(DataRootError, match=r"test\[1\]"):
        Taskonomy(tk, "test", check_files=True)
    assert len(Taskonomy(tk, "test", tasks=("depth",), check_files=True)) == 3
    _entry(tk, "train", 0)[0].unlink()
    with pytest.raises(DataRootError, match="first 'train' entry"):
        Taskonomy(tk, "train")


def test_errors_format_and_shape(tk: Path) -> None:
    rgb, seg, normal, depth, kp, edge = _entry(tk, "test")
    write_png16(depth, np.zeros((8, 16)))
    with pytest.raises(DataFormatError, match=r"depth is \(8, 16\) but rgb is \(16, 16\)"):
        Taskonomy(tk, "test")[0]
    write_png(depth, np.zeros((16, 16)))  # 8-bit depth is not the format
    with pytest.raises(DataFormatError, match="16-bit"):
        Taskonomy(tk, "test")[0]
    with pytest.raises(ValueError, match="split"):
        Taskonomy(tk, "val")
    with pytest.raises(ValueError, match="unknown"):
        Taskonomy(tk, "test", tasks=("seg", "curvature"))
    with pytest.raises(ValueError, match="depth_encoding"):
        Taskonomy(tk, "test", depth_encoding="inverse")
