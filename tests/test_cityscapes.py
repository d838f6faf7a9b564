"""Cityscapes reader (MTAN and AdaShare formats) on generated files, its errors and its data config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

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
    with pytest.raises(DataRootError, match="cityscape.json is missing"):
        Cityscapes(mtan, format="adashare")
    with pytest.raises(DataRootError, match=r"no \{i\}.npy files in train/image/"):
        Cityscapes(ada, format="mtan")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataRootError, match="missing folder"):
        Cityscapes(tmp_path / "empty", format="mtan")
    with pytest.raises(ValueError, match="num_classes"):
        Cityscapes(mtan, num_classes=2)


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
