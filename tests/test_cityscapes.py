"""Cityscapes reader (MTAN, LibMTL and AdaShare layouts) on generated files, its errors and its data configs,
against re-implementations of LibMTL's and AdaShare's loaders and AdaShare's depth rule and crop."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from mtl_robust.data.cityscapes import Cityscapes
from mtl_robust.data.errors import DataFormatError, DataRootError
from mtl_robust.tasks import build_tasks
from tests.fakes_formats import write_cityscapes

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mtan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cityscapes(tmp_path_factory.mktemp("city_mtan"), n_train=3, n_val=2)


@pytest.fixture(scope="module")
def ada(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cityscapes(tmp_path_factory.mktemp("city_ada"), n_train=2, n_val=2, format="adashare")


def test_mtan_sample_conventions_and_exact_values(mtan: Path) -> None:
    ds = Cityscapes(mtan, split="train", num_classes=7)
    assert len(ds) == 3 and len(Cityscapes(mtan, split="val")) == 2
    assert len(Cityscapes(mtan, split="test")) == 2 and len(Cityscapes(mtan, split="all")) == 5
    x, t = ds[1]
    assert x.shape == (3, 32, 64) and x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), np.load(mtan / "train/image/1.npy").transpose(2, 0, 1))
    stored = np.load(mtan / "train/label_7/1.npy")
    assert t["seg"].dtype == torch.int64 and t["seg"].shape == (32, 64)
    assert ((t["seg"] == 255).numpy() == (stored == -1)).all()
    assert t["seg"][t["seg"] != 255].max() <= 6
    depth = np.load(mtan / "train/depth/1.npy")[..., 0]
    assert t["depth"].shape == (1, 32, 64)
    np.testing.assert_array_equal(t["depth"][0].numpy(), depth)  # kept as stored (inverse depth), 0 = invalid


def test_19_class_labels_read_from_their_folder(mtan: Path) -> None:
    ds = Cityscapes(mtan, split="val", num_classes=19, tasks=["seg"])
    _, t = ds[0]
    stored = np.load(mtan / "val/label_19/0.npy")
    expected = np.where(stored < 0, 255, stored).astype(np.int64)
    np.testing.assert_array_equal(t["seg"].numpy(), expected)
    assert ds.class_names is not None and len(ds.class_names) == 19 and set(t) == {"seg"}


def test_adashare_format_reads_the_same_arrays_through_the_json(ada: Path) -> None:
    info = json.loads((ada / "cityscape.json").read_text())
    ds = Cityscapes(ada, split="val", format="adashare", num_classes=19)
    assert len(ds) == 2 and len(Cityscapes(ada, split="train", format="adashare")) == 2
    x, t = ds[1]
    image, depth, _, _, label19 = (np.load(ada / p) for p in info["test"][1])
    np.testing.assert_array_equal(x.numpy(), image.transpose(2, 0, 1))
    np.testing.assert_array_equal(t["depth"][0].numpy(), depth[..., 0])
    np.testing.assert_array_equal(t["seg"].numpy(), np.where(label19 < 0, 255, label19).astype(np.int64))
    assert Cityscapes(ada, split="val", format="adashare", num_classes=2)[0][1]["seg"].max() <= 255


def test_depth_metric_counts_every_positive_pixel(mtan: Path) -> None:
    ds = Cityscapes(mtan, split="val")
    tasks = build_tasks(ds.tasks, num_classes=ds.num_classes, task_kwargs={"depth": {"valid_threshold": 0}})
    _, t = ds[0]
    g = t["depth"][None]
    assert int(tasks["depth"].valid_count(g)) == int((g > 0).sum())
    metric = tasks["depth"].metric()
    metric.update(g * 1.1, g)
    out = metric.compute()
    assert out["rel_err"] == pytest.approx(0.1, rel=1e-4)  # rel = |p - g| / g over valid pixels


def test_errors_name_the_layout_and_the_source(mtan: Path, ada: Path, tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as err:
        Cityscapes(tmp_path / "nowhere")
    text = str(err.value)
    assert "does not exist" in text and "label_7" in text and "lorenmt/mtan" in text and "data.root" in text
    assert "train/label/{i}.npy" in text and "LibMTL" in text  # both folder layouts are listed
    with pytest.raises(DataRootError, match="cityscape.json is missing"):
        Cityscapes(mtan, format="adashare")
    with pytest.raises(DataRootError, match=r"no \{i\}.npy files in train/image/"):
        Cityscapes(ada, format="mtan")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataRootError, match="missing folder"):
        Cityscapes(tmp_path / "empty", format="mtan")
    with pytest.raises(ValueError, match="num_classes"):
        Cityscapes(mtan, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        Cityscapes(mtan, format="libmtl", num_classes=19)


def test_errors_on_bad_content(tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path / "c", n_train=1, n_val=1)
    np.save(root / "val/label_7/0.npy", np.full((32, 64), 9.0, dtype=np.float32))
    with pytest.raises(DataFormatError, match="0..6"):
        Cityscapes(root, split="val")[0]
    np.save(root / "val/depth/0.npy", np.zeros((16, 64, 1), dtype=np.float32))
    with pytest.raises(DataFormatError, match="matching the image"):
        Cityscapes(root, split="val", tasks=["depth"])[0]
    (root / "train/depth/0.npy").unlink()
    with pytest.raises(DataRootError, match="do not exist"):
        Cityscapes(root, split="train")


# ------------------------------------------------------------------------------------ LibMTL's layout
def _libmtl_sample(root: Path, mode: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LibMTL's examples/cityscapes loader (create_dataset.py), re-implemented: the frame count from the
    image folder, then image (moved to channels first), label/ and depth (channels first) by index."""
    path = root / ("train" if mode == "train" else "val")
    assert index < len(fnmatch.filter(os.listdir(path / "image"), "*.npy"))
    image = np.moveaxis(np.load(path / "image" / f"{index}.npy"), -1, 0)
    semantic = np.load(path / "label" / f"{index}.npy")
    depth = np.moveaxis(np.load(path / "depth" / f"{index}.npy"), -1, 0)
    return image, semantic, depth


@pytest.fixture(scope="module")
def libmtl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cityscapes(tmp_path_factory.mktemp("city_libmtl"), n_train=3, n_val=2, format="libmtl")


def test_libmtl_layout_reads_what_libmtl_reads(libmtl: Path) -> None:
    for split, mode, n in (("train", "train", 3), ("val", "test", 2)):
        ds = Cityscapes(libmtl, split=split, format="libmtl")
        assert len(ds) == n and ds.class_names is not None and len(ds.class_names) == 7
        for i in range(n):
            x, t = ds[i]
            image, semantic, depth = _libmtl_sample(libmtl, mode, i)
            np.testing.assert_array_equal(x.numpy(), image)
            # LibMTL's loss ignores -1 and its metric counts 0 <= gt < 7: here 255 is the ignore label
            np.testing.assert_array_equal(
                t["seg"].numpy(), np.where(semantic < 0, 255, semantic).astype(np.int64)
            )
            np.testing.assert_array_equal(t["depth"].numpy(), depth)


def test_folder_layouts_point_at_each_other(mtan: Path, libmtl: Path) -> None:
    with pytest.raises(DataRootError) as err:
        Cityscapes(libmtl, format="mtan")
    text = str(err.value)
    assert "missing folder(s) train/label_7/" in text and "format='libmtl' (data=cityscapes_libmtl)" in text
    assert "label_19" in text and "train/label/{i}.npy" in text  # both layouts listed
    with pytest.raises(DataRootError, match=r"train/label_7/ is there: that is the 'mtan' layout"):
        Cityscapes(mtan, format="libmtl")


# --------------------------------------------------------------- the data configs against the originals
def _datamodule(compose, data: str, root: Path):
    return instantiate(compose([f"data={data}", f"data.root={root}", "data.num_workers=0"]).data)


def test_depth_validity_per_config_as_each_original(compose, mtan: Path, ada: Path, libmtl: Path) -> None:
    """MTAN/LibMTL count depth != 0; AdaShare (envs/base_env.py) counts sum over channels > 3e-5."""
    for data, root, rule in (
        ("cityscapes", mtan, lambda g: g.sum(dim=1) != 0),
        ("cityscapes_libmtl", libmtl, lambda g: g.sum(dim=1) != 0),
        ("cityscapes_adashare", ada, lambda g: g.sum(dim=1) > 3 * 1e-5),
    ):
        dm = _datamodule(compose, data, root)
        depth = dm.build_tasks()["depth"]
        g = torch.stack([dm.dataset("test")[i][1]["depth"] for i in range(2)])
        assert torch.equal(depth.valid_mask(g), rule(g)), data
    tiny = g[:, 0, 0, :4]  # the fixture's positive depths 1e-6 .. 3e-5: valid for MTAN/LibMTL only
    assert (tiny > 0).all() and not depth.valid_mask(g)[:, 0, :4].any()


def test_adashare_config_crops_training_frames_as_its_yaml(compose, ada: Path) -> None:
    """AdaShare's yamls/adashare/cityscapes_2task.yml: crop_h = crop_w = 224 for training (after the random
    scale, flip and centred pad); test frames are read whole (its test mode transforms nothing)."""
    dm = _datamodule(compose, "cityscapes_adashare", ada)
    torch.manual_seed(0)
    for i in range(2):
        x, t = dm.dataset("train")[i]
        assert x.shape == (3, 224, 224) and t["seg"].shape == (224, 224) and t["depth"].shape == (1, 224, 224)
        # the 32 x 64 fixture frame is padded: outside it labels are ignored and depth invalid
        assert (t["seg"] == 255).float().mean() > 0.9 and (t["depth"] == 0).float().mean() > 0.9
    x, t = dm.dataset("test")[0]
    assert x.shape == (3, 32, 64) and t["depth"].shape == (1, 32, 64)
