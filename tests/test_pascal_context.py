"""PASCAL-Context multi-task reader on generated files in the PASCAL_MT layout, and its three new tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mtl_robust.data.errors import DataFormatError, DataRootError
from mtl_robust.data.pascal_context import (
    HUMAN_PART_LABELS,
    PascalContext,
    context_edges,
    pascal_test_transform,
    pascal_train_transform,
)
from mtl_robust.tasks import EdgeTask, HumanPartsTask, SaliencyTask, build_task, build_tasks
from tests.fakes_formats import write_pascal_context, write_pascal_part_mat, write_png

torch.set_num_threads(1)
H, W = 30, 40


@pytest.fixture(scope="module")
def pc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pascal_context(tmp_path_factory.mktemp("pascal"), n_train=2, n_val=3, height=H, width=W)


# ---------------------------------------------------------------------------------------------- reader
def test_sample_conventions(pc: Path) -> None:
    ds = PascalContext(pc, split="train")
    assert len(ds) == 2 and len(PascalContext(pc, split="val")) == 3 and ds.names[0] == "2008_000000"
    x, t = ds[0]
    assert list(t) == ["seg", "human_parts", "saliency", "normal", "edge"]
    assert x.shape == (3, H, W) and 0 <= x.min() and x.max() <= 1
    assert t["seg"].dtype == torch.int64 and t["human_parts"].dtype == torch.int64
    stored_seg = np.array(__import__("PIL.Image").Image.open(pc / "semseg/pascal-context/2008_000000.png"))
    np.testing.assert_array_equal(t["seg"].numpy(), stored_seg)
    sal = np.array(__import__("PIL.Image").Image.open(pc / "sal_distill/2008_000000.png"))
    np.testing.assert_array_equal(t["saliency"][0].numpy(), (sal > 127.5).astype(np.float32))
    for key in ("saliency", "edge"):
        assert t[key].shape == (1, H, W) and set(t[key].unique().tolist()) <= {0.0, 1.0}


def test_human_parts_merge_part_names_and_skip_other_objects(pc: Path) -> None:
    ds = PascalContext(pc, split="train", tasks=["human_parts"])
    _, with_person = ds[0]
    parts = with_person["human_parts"]
    assert (parts[2:6, 3:8] == HUMAN_PART_LABELS["head"]).all()
    assert (parts[6:14, 2:9] == HUMAN_PART_LABELS["torso"]).all()
    assert int((parts > 0).sum()) == 4 * 5 + 8 * 7
    _, without = ds[1]  # an image without a person is ignored everywhere, as the original loaders make it
    assert (without["human_parts"] == 255).all()


def test_normals_valid_only_on_nyu_classes(pc: Path) -> None:
    _, t = PascalContext(pc, split="val", tasks=["normal"])[0]
    valid = (t["normal"] != 0).any(dim=0)
    # the fake label map: wall (1) everywhere but floor (2) bottom-left, sky (3) top-right, grass (5)
    # bottom-right; wall and floor are NYUv2 classes, sky and grass are not
    expected = torch.ones(H, W, dtype=torch.bool)
    expected[: H // 3, W // 2 :] = False
    expected[H // 2 :, W // 2 :] = False
    assert torch.equal(valid, expected)  # the class decides alone, mid-grey (near-zero) pixels included
    norms = t["normal"].norm(dim=0)[valid]
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_context_edges_one_side_of_each_boundary() -> None:
    lab = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    edge = context_edges(lab)
    expected = np.array([[0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1]], dtype=np.float32)
    np.testing.assert_array_equal(edge, expected)
    assert context_edges(np.full((3, 3), 7)).sum() == 0


def test_transforms_batch_and_flip_negates_normal_x(pc: Path) -> None:
    ds = PascalContext(pc, split="val", transform=pascal_test_transform((16, 24)))
    x, t = next(iter(DataLoader(ds, batch_size=3)))
    assert x.shape == (3, 3, 16, 24) and t["edge"].shape == (3, 1, 16, 24) and t["seg"].shape == (3, 16, 24)
    flipped = PascalContext(pc, split="val", tasks=["normal"], transform=pascal_train_transform((H, W), 1.0))
    plain = PascalContext(pc, split="val", tasks=["normal"])
    a, b = flipped[0][1]["normal"], plain[0][1]["normal"]
    torch.testing.assert_close(a[0], -b[0].flip(-1))
    torch.testing.assert_close(a[1:], b[1:].flip(-1))


def test_errors_missing_root_split_and_files(pc: Path, tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as err:
        PascalContext(tmp_path / "nowhere")
    text = str(err.value)
    assert "does not exist" in text and "JPEGImages" in text and "PASCAL_MT" in text and "data.root" in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataRootError, match="ImageSets/Context/train.txt is missing"):
        PascalContext(tmp_path / "empty")
    root = write_pascal_context(tmp_path / "pc", n_train=1, n_val=1, height=8, width=8)
    (root / "sal_distill" / "2008_000000.png").unlink()
    with pytest.raises(DataRootError, match="sal_distill/2008_000000.png"):
        PascalContext(root, split="train")
    PascalContext(root, split="train", tasks=["seg", "edge"])  # only the files of the asked tasks count
    (root / "json" / "nyu_classes.json").unlink()
    with pytest.raises(DataRootError, match="nyu_classes.json"):
        PascalContext(root, split="val", tasks=["normal"])


def test_errors_on_bad_content(tmp_path: Path) -> None:
    root = write_pascal_context(tmp_path / "pc", n_train=1, n_val=1, height=8, width=8)
    write_png(root / "semseg/pascal-context/2008_000000.png", np.full((8, 8), 40))
    with pytest.raises(DataFormatError, match="0..20"):
        PascalContext(root, tasks=["seg"])[0]
    head = np.ones((8, 8), bool)
    write_pascal_part_mat(root / "human_parts/2008_000000.mat", [(15, head, {"tail": head})])
    with pytest.raises(DataFormatError, match="unknown person part 'tail'"):
        PascalContext(root, tasks=["human_parts"])[0]
    (root / "pascal-context/trainval/2008_000000.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataFormatError, match="MATLAB"):
        PascalContext(root, tasks=["edge"])[0]


# ----------------------------------------------------------------------------------------------- tasks
def test_new_tasks_build_from_the_dataset_and_round_trip(pc: Path) -> None:
    ds = PascalContext(pc, split="val")
    tasks = build_tasks(ds.tasks, num_classes=ds.num_classes)
    assert {n: t.out_channels for n, t in tasks.items()} == {
        "seg": 21, "human_parts": 7, "saliency": 1, "normal": 3, "edge": 1,
    }  # fmt: skip
    for task in tasks.values():
        rebuilt = build_task(**task.config())
        assert type(rebuilt) is type(task) and rebuilt.config() == task.config()
    x, t = next(
        iter(DataLoader(PascalContext(pc, "val", transform=pascal_test_transform((16, 16))), batch_size=3))
    )
    for name, task in tasks.items():
        pred = torch.zeros(3, task.out_channels, 8, 8, requires_grad=True)
        loss = task.loss(pred, t[name])
        assert loss.shape == (3,) and torch.isfinite(loss).all(), name


def test_edge_loss_weights_positives_095() -> None:
    target = torch.tensor([1.0, 0.0, 255.0]).view(1, 1, 1, 3)
    pred = torch.zeros(1, 1, 1, 3)
    ln2 = math.log(2.0)
    assert EdgeTask().loss(pred, target).item() == pytest.approx((0.95 * ln2 + 0.05 * ln2) / 2)
    # balanced (saliency): 1 positive and 3 negatives -> positives weigh 3/4, negatives 1/4
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    pred = torch.zeros(1, 1, 1, 4)
    assert SaliencyTask().loss(pred, target).item() == pytest.approx((0.75 + 3 * 0.25) * ln2 / 4)


def test_binary_metrics_hand_values() -> None:
    # probabilities 0.9, 0.8, 0.3, 0.1 on targets 1, 0, 1, 0: the best F1 is at threshold <= 0.3
    # (P = 2/3, R = 1 -> F1 = 0.8); with beta^2 = 0.3 the best is at 0.9 (P = 1, R = 1/2 -> F = 0.8125)
    probs = torch.tensor([0.9, 0.8, 0.3, 0.1])
    pred = torch.logit(probs).view(1, 1, 1, 4)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)
    edge = EdgeTask().metric()
    edge.update(pred, target)
    assert edge.compute()["f_measure"].item() == pytest.approx(0.8, abs=1e-6)
    sal = SaliencyTask().metric()
    sal.update(pred, target)
    out = sal.compute()
    assert out["max_f"].item() == pytest.approx(1.3 * 0.5 / (0.3 + 0.5), abs=1e-6)
    # mIoU at threshold 0.85: fg IoU 1/2, bg IoU 2/3 -> 7/12; at 0.3: fg 2/3, bg 1/2 -> 7/12 too
    assert out["miou"].item() == pytest.approx(7 / 12, abs=1e-6)


def test_human_parts_ignores_dataset_num_classes() -> None:
    tasks = build_tasks(["seg", "human_parts"], num_classes=21)
    assert tasks["seg"].out_channels == 21 and tasks["human_parts"].out_channels == 7
    assert isinstance(tasks["human_parts"], HumanPartsTask) and tasks["human_parts"].name == "human_parts"


# -------------------------------------------------- against the original loaders' rules, re-implemented
# MTI-Net's HUMAN_PART[6] table (data/pascal_context.py of SimonVandenhende/Multi-Task-Learning-PyTorch,
# the same in InvPT), typed again here so that the test does not read the reader's table.
_ORIGINAL_PARTS_6 = {
    "hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "lfoot": 6, "lhand": 4, "llarm": 4, "llleg": 6,
    "luarm": 3, "luleg": 5, "mouth": 1, "neck": 2, "nose": 1, "rear": 1, "rebrow": 1, "reye": 1, "rfoot": 6,
    "rhand": 4, "rlarm": 4, "rlleg": 6, "ruarm": 3, "ruleg": 5, "torso": 2,
}  # fmt: skip


def _original_human_parts(mat: Path, hw: tuple[int, int]) -> np.ndarray:
    """The originals' target: objects read by position as they index the .mat, a person counted when its
    object has class 15 and a non-empty parts list, zeros when none; then AddIgnoreRegions (InvPT's form:
    every pixel 0 or 255 -> all 255; MTI-Net's 'all 0' is the same here, nothing is padded)."""
    objects = scipy.io.loadmat(mat)["anno"][0][0][1][0]
    target = None
    for obj in objects:
        if obj[1][0][0] == 15 and len(obj[3]) != 0:
            target = np.zeros(obj[2].shape) if target is None else target
            for k in range(len(obj[3][0])):
                target[obj[3][0][k][1].astype(bool)] = _ORIGINAL_PARTS_6[str(obj[3][0][k][0][0])]
    target = np.zeros(hw) if target is None else target
    if ((target == 0) | (target == 255)).all():
        target = np.full(hw, 255.0)
    return target


def _original_normals(root: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors [H,W,3], valid [H,W]) as the originals make them: decode, copy only the pixels of
    the NYUv2-compatible classes (plus tvmonitor) into zeros, ignore the pixels of norm 0, normalise."""
    stored = np.array(Image.open(root / "normals_distill" / f"{image_id}.png")).astype(np.float32)
    decoded = 2.0 * stored / 255.0 - 1.0
    labels = scipy.io.loadmat(root / "pascal-context" / "trainval" / f"{image_id}.mat")["LabelMap"]
    nyu = json.loads((root / "json" / "nyu_classes.json").read_text())
    context = json.loads((root / "json" / "context_classes.json").read_text())
    classes = [context[c] for c in nyu if c in context and c != "unknown"] + [context["tvmonitor"]]
    normals = np.zeros(decoded.shape)
    for x in np.unique(labels):
        if x in classes:
            normals[labels == x, :] = decoded[labels == x, :]
    norm = np.sqrt((normals**2).sum(axis=2))
    return normals / (norm[..., None] + np.finfo(np.float32).eps), norm != 0


@pytest.fixture(scope="module")
def pc_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Val images: 0, 2 with a part-annotated person, 1 without a person, 3 with a person without parts."""
    return write_pascal_context(tmp_path_factory.mktemp("cases"), n_train=1, n_val=4, height=H, width=W)


def test_human_parts_and_normals_equal_the_original_rules(pc_cases: Path) -> None:
    ds = PascalContext(pc_cases, split="val", tasks=["human_parts", "normal"])
    ignored, grey = [], 0
    for i, image_id in enumerate(ds.ids):
        _, t = ds[i]
        expected = _original_human_parts(pc_cases / "human_parts" / f"{image_id}.mat", (H, W))
        np.testing.assert_array_equal(t["human_parts"].numpy(), expected)
        ignored.append(bool((expected == 255).all()))
        unit, valid = _original_normals(pc_cases, image_id)
        assert np.array_equal((t["normal"] != 0).any(dim=0).numpy(), valid)
        np.testing.assert_allclose(t["normal"].permute(1, 2, 0).numpy()[valid], unit[valid], atol=1e-4)
        rgb = np.array(Image.open(pc_cases / "normals_distill" / f"{image_id}.png"))
        grey += int(((rgb == 128).all(axis=2) & valid).sum())
    assert ignored == [False, True, False, True]  # no person, and a person without parts: all ignored
    assert grey == 4 * (W // 2)  # the stored (128, 128, 128) pixels on wall are valid normals


def test_ignore_rule_follows_the_transform_and_skips_nothing_else(tmp_path: Path) -> None:
    root = write_pascal_context(tmp_path / "pc", n_train=1, n_val=1, height=8, width=8)
    head = np.zeros((8, 8), bool)
    head[1, 1] = True  # one pixel, lost by a nearest resize to 4 x 4 (it keeps rows and columns 0, 2, 4, 6)
    write_pascal_part_mat(root / "human_parts/2008_000000.mat", [(15, head, {"head": head})])
    plain = PascalContext(root, tasks=["human_parts"])[0][1]["human_parts"]
    assert int((plain == 1).sum()) == 1 and int((plain == 0).sum()) == 63
    small = PascalContext(root, tasks=["human_parts"], transform=pascal_test_transform((4, 4)))[0][1]
    assert (small["human_parts"] == 255).all()


def test_an_ignored_image_adds_nothing_to_loss_or_miou(pc_cases: Path) -> None:
    ds = PascalContext(pc_cases, split="val", tasks=["human_parts"])
    person, nobody = ds[0][1]["human_parts"], ds[1][1]["human_parts"]
    task = build_tasks(["human_parts"])["human_parts"]
    pred = torch.randn(2, 7, H, W, generator=torch.Generator().manual_seed(0))
    both = task.metric()
    both.update(pred, torch.stack([person, nobody]))
    alone = task.metric()
    alone.update(pred[:1], person[None])
    assert both.compute()["miou"].item() == pytest.approx(alone.compute()["miou"].item())
    loss = task.loss(pred, torch.stack([person, nobody]))
    assert loss[1].item() == 0.0 and loss[0].item() > 0 and int(task.valid_count(nobody[None])) == 0
