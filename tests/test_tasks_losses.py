"""Task losses, masks, guards, resizing and the registry, against hand-computed values."""

import math

import pytest
import torch

from mtl_robust.tasks import (
    TASKS,
    DepthTask,
    NormalTask,
    RegressionTask,
    SegmentationTask,
    build_task,
    build_tasks,
)

torch.set_num_threads(1)


def _seg_logits() -> torch.Tensor:
    """1 x 2 classes x 1 x 3: pixel 0 logits (0, 0); pixel 1 (0, ln 3); pixel 2 anything (ignored)."""
    return torch.tensor([[[[0.0, 0.0, 5.0]], [[0.0, math.log(3.0), -5.0]]]])


SEG_TARGET = torch.tensor([[[0, 1, 255]]])
CE0, CE1 = math.log(2.0), math.log(4.0 / 3.0)  # -log softmax of the true class at pixels 0 and 1


# ----------------------------------------------------------------------------------------- segmentation
def test_seg_ce_ignores_255():
    loss = SegmentationTask(2).loss(_seg_logits(), SEG_TARGET)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx((CE0 + CE1) / 2, rel=1e-6)


def test_seg_class_weighted_ce_divides_by_weight_sum():
    task = SegmentationTask(2, class_weights=[2.0, 1.0])
    assert task.loss(_seg_logits(), SEG_TARGET).item() == pytest.approx((2 * CE0 + CE1) / 3, rel=1e-6)
    # A weight sum below 1 is a legitimate denominator (no clamp to 1): one valid pixel -> its plain CE.
    small = SegmentationTask(2, class_weights=[0.1, 0.1])
    target = torch.tensor([[[0, 255, 255]]])
    assert small.loss(_seg_logits(), target).item() == pytest.approx(CE0, rel=1e-6)


def test_seg_target_guards():
    task = SegmentationTask(2)
    with pytest.raises(ValueError, match="integer label map"):
        task.loss(_seg_logits(), SEG_TARGET.float())
    with pytest.raises(ValueError, match="outside 0..1"):
        task.loss(_seg_logits(), torch.tensor([[[0, 2, 255]]]))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        task.loss(_seg_logits(), SEG_TARGET[0])
    with pytest.raises(ValueError, match="out_channels"):
        SegmentationTask(3).loss(_seg_logits(), SEG_TARGET)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationTask(2, class_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationTask(2, ignore_index=1)
    # [N, 1, H, W] uint8 maps (as some loaders emit them) are accepted.
    loss = task.loss(_seg_logits(), SEG_TARGET.unsqueeze(1).to(torch.uint8))
    assert loss.item() == pytest.approx((CE0 + CE1) / 2, rel=1e-6)


# ------------------------------------------------------------------------------------------ depth etc.
def test_depth_l1_over_valid_pixels_only():
    target = torch.tensor([[[[1.0, 0.0], [2.0, 1e-5]]]])  # 0 and 1e-5 (< 3e-5) are invalid
    pred = torch.tensor([[[[1.5, 9.0], [3.0, 7.0]]]])
    task = DepthTask()
    assert task.loss(pred, target).item() == pytest.approx((0.5 + 1.0) / 2)
    assert task.valid_mask(target).tolist() == [[[True, False], [True, False]]]
    assert task.valid_count(target).tolist() == [2]
    assert DepthTask(valid_threshold=0.0).valid_count(target).tolist() == [3]
    # [N, H, W] targets are accepted for one-channel tasks.
    assert task.loss(pred, target[:, 0]).item() == pytest.approx(0.75)


def test_normal_cosine_loss():
    # Pixels: orthogonal (1 - 0), parallel with another length (1 - 1), opposite (1 + 1), invalid target.
    pred = torch.tensor([[1.0, 2.0, -1.0, 7.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0]])
    target = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    pred, target = pred.view(1, 3, 1, 4), target.view(1, 3, 1, 4)
    task = NormalTask()
    assert task.loss(pred, target).item() == pytest.approx((1.0 + 0.0 + 2.0) / 3, abs=1e-6)
    assert task.valid_count(target).tolist() == [3]


def test_regression_l1_with_and_without_ignore_value():
    target = torch.tensor([[[[0.0, 255.0], [1.0, 2.0]]]])
    pred = torch.tensor([[[[1.0, 0.0], [1.0, 4.0]]]])
    assert RegressionTask("edges").loss(pred, target).item() == pytest.approx((1 + 255 + 0 + 2) / 4)
    ignoring = RegressionTask("edges", ignore_value=255)
    assert ignoring.loss(pred, target).item() == pytest.approx((1 + 0 + 2) / 3)
    assert ignoring.valid_count(target).tolist() == [3]


# ----------------------------------------------------------------------------- generic loss contract
def _random_case(name: str, n: int = 3, size: int = 4) -> tuple:
    g = torch.Generator().manual_seed(0)
    task = build_task(name, num_classes=4) if name == "seg" else build_task(name)
    pred = torch.randn(n, task.out_channels, size, size, generator=g)
    if task.target_channels is None:  # a label map (seg, human_parts)
        target = torch.randint(0, 4, (n, size, size), generator=g)
    else:
        target = torch.rand(n, task.out_channels, size, size, generator=g) + 0.1
    return task, pred, target


@pytest.mark.parametrize("name", sorted(TASKS))
def test_per_sample_losses_are_independent(name):
    task, pred, target = _random_case(name)
    pred.requires_grad_(True)
    losses = task.loss(pred, target)
    assert losses.shape == (3,) and losses.dtype == torch.float32
    for i in range(3):
        alone = task.loss(pred[i : i + 1], target[i : i + 1])
        assert alone.item() == pytest.approx(losses[i].item(), rel=1e-6)
    (grad,) = torch.autograd.grad(losses[0], pred)
    assert grad[0].abs().sum() > 0
    assert grad[1:].abs().sum() == 0


@pytest.mark.parametrize("name", sorted(TASKS))
def test_empty_mask_gives_zero_loss_and_finite_gradient(name):
    task, pred, target = _random_case(name, n=2)
    if task.target_channels is None:
        target[1] = 255
    elif name in ("depth", "normal"):
        target[1] = 0.0
    else:
        task = build_task(name, ignore_value=-1.0)
        target[1] = -1.0
    # A zero prediction is the worst case for normalisation (normals) and must not give NaN either.
    pred = torch.zeros_like(pred).requires_grad_(True)
    losses = task.loss(pred, target)
    assert losses[1].item() == 0.0
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[1].abs().sum() == 0
    assert task.valid_count(target)[1].item() == 0


@pytest.mark.parametrize("name", sorted(TASKS))
def test_half_precision_pred_gives_float32_loss(name):
    task, pred, target = _random_case(name)
    half = task.loss(pred.half(), target)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, task.loss(pred.half().float(), target))


@pytest.mark.parametrize("name", ["normal", "depth", "edges"])
def test_shape_guards(name):
    task, pred, target = _random_case(name)
    with pytest.raises(ValueError, match="batch size"):
        task.loss(pred[:2], target)
    with pytest.raises(ValueError, match="out_channels"):
        task.loss(torch.cat([pred, pred], dim=1), target)
    with pytest.raises(ValueError, match="target must have shape"):
        task.loss(pred, target[:, :, :, :, None])
    with pytest.raises(ValueError, match="float"):
        task.loss(pred.long(), target)


# ------------------------------------------------------------------------------------------ resizing
# Pred row (0, 4) at half width: bilinear (align_corners=False) -> (0, 1, 3, 4); nearest -> (0, 0, 4, 4).
HALF_PRED = torch.tensor([0.0, 4.0]).view(1, 1, 1, 2)
FULL_TARGET = torch.tensor([[0.0, 1.0, 3.0, 4.0], [0.0, 1.0, 3.0, 4.0]]).view(1, 1, 2, 4)


def test_resize_pred_bilinear_upsamples_prediction():
    task = RegressionTask("keypoints")
    assert task.loss(HALF_PRED, FULL_TARGET).item() == pytest.approx(0.0, abs=1e-6)
    metric = task.metric()
    metric.update(HALF_PRED, FULL_TARGET)
    assert metric.compute()["err"].item() == pytest.approx(0.0, abs=1e-6)


def test_resize_target_nearest_downsamples_target_for_loss_and_nearest_upsamples_for_metric():
    task = RegressionTask("keypoints", resize="target")
    # Target nearest-downsampled to (1, 2) picks columns 0 and 2: (0, 3) -> L1 = (0 + 1) / 2.
    assert task.loss(HALF_PRED, FULL_TARGET).item() == pytest.approx(0.5)
    metric = task.metric()
    metric.update(HALF_PRED, FULL_TARGET)  # |(0, 0, 4, 4) - (0, 1, 3, 4)| averages to 0.5
    assert metric.compute()["err"].item() == pytest.approx(0.5)


def test_resize_target_keeps_seg_labels_and_ignore():
    task = SegmentationTask(2, resize="target")
    target = torch.tensor([[[0, 0, 255, 255], [0, 0, 255, 255]]])
    logits = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    # Downsampled target (0, 255): only pixel 0 counts, CE of class 0 with p = 3/4.
    assert task.loss(logits, target).item() == pytest.approx(math.log(4.0 / 3.0), rel=1e-6)


def test_resize_none_rejects_size_mismatch():
    with pytest.raises(ValueError, match="resize='none'"):
        RegressionTask("edges", resize="none").loss(HALF_PRED, FULL_TARGET)
    with pytest.raises(ValueError, match="resize must be one of"):
        DepthTask(resize="bicubic")


# ------------------------------------------------------------------------------------------ registry
def test_config_round_trip_rebuilds_equal_tasks():
    tasks = [
        SegmentationTask(
            3, class_weights=torch.tensor([1.0, 0.5, 2.0]), miou_mode="faithful", metrics=["err"]
        ),
        NormalTask(median_bin_deg=0.05, resize="target"),
        DepthTask(valid_threshold=0.0, metrics=("abs_err",)),
        RegressionTask("keypoints", ignore_value=255),
        build_task("edges", out_channels=2),
    ]
    for task in tasks:
        rebuilt = build_task(**task.config())
        assert type(rebuilt) is type(task)
        assert rebuilt.config() == task.config()
        assert rebuilt.name == task.name and rebuilt.out_channels == task.out_channels
        assert rebuilt.loss_name == task.loss_name
    assert tasks[0].loss_name == "weighted_ce" and SegmentationTask(3).loss_name == "ce"


def test_build_tasks_routes_dataset_kwargs():
    tasks = build_tasks(["seg", "normal", "depth", "keypoints", "edges"], num_classes=17, resize="target")
    assert list(tasks) == ["seg", "normal", "depth", "keypoints", "edges"]
    assert tasks["seg"].out_channels == 17
    assert [t.out_channels for t in tasks.values()] == [17, 3, 1, 1, 1]
    assert all(t.resize == "target" for t in tasks.values())
    assert tasks["keypoints"].name == "keypoints" and tasks["edges"].name == "edges"
    tasks = build_tasks(["depth", "edges"], num_classes=40, task_kwargs={"edges": {"ignore_value": 255}})
    assert tasks["edges"].ignore_value == 255.0
    with pytest.raises(ValueError, match="no task accepts"):
        build_tasks(["seg"], num_clases=40)
    with pytest.raises(ValueError, match="unknown task"):
        build_tasks(["seg", "surface"], num_classes=40)
    with pytest.raises(ValueError, match="unknown task"):
        build_task("segmentation")
    with pytest.raises(ValueError, match="bad arguments"):
        build_task("depth", num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        build_task("seg")
