"""Task metrics against hand-computed values; accumulation, merging (the sync path) and directions."""

import math

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from mtl_robust.tasks import TASKS, DepthTask, NormalTask, RegressionTask, SegmentationTask, build_task
from mtl_robust.tasks.normal import angle_deg

torch.set_num_threads(1)


def _one_hot_logits(labels: list[int], num_classes: int) -> torch.Tensor:
    """Logits [1, C, 1, P] whose argmax is `labels`."""
    return (torch.nn.functional.one_hot(torch.tensor(labels), num_classes).T.float() * 5.0).view(
        1, num_classes, 1, -1
    )


# ----------------------------------------------------------------------------------------- segmentation
# 4 classes; class 3 never appears. Pixels (target -> pred): 0->0, 0->1, 1->1, 1->1, 2->0, ignored->2.
# diag (1, 2, 0, 0); target counts (2, 2, 1, 0); pred counts (2, 3, 0, 0) over valid pixels;
# union (3, 3, 1, 0); IoU (1/3, 2/3, 0, -).
SEG_TARGET = torch.tensor([[[0, 0, 1, 1, 2, 255]]])
SEG_PRED = _one_hot_logits([0, 1, 1, 1, 0, 2], 4)


def test_miou_standard_vs_faithful_and_pixel_acc():
    standard = SegmentationTask(4).metric()
    standard.update(SEG_PRED, SEG_TARGET)
    out = standard.compute()
    assert set(out) == {"miou", "pixel_acc"}
    assert out["miou"].item() == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)  # class 3 (union 0) left out
    assert out["pixel_acc"].item() == pytest.approx(3 / 5)
    faithful = SegmentationTask(4, miou_mode="faithful").metric()
    faithful.update(SEG_PRED, SEG_TARGET)
    assert faithful.compute()["miou"].item() == pytest.approx((1 / 3 + 2 / 3) / 2)  # class 2 dropped too


def test_seg_err_is_pooled_weighted_ce():
    task = SegmentationTask(2, class_weights=[2.0, 1.0], metrics=("miou", "pixel_acc", "err"))
    logits = torch.tensor([[[[0.0, 0.0, 5.0]], [[0.0, math.log(3.0), -5.0]]]])
    target = torch.tensor([[[0, 1, 255]]])
    metric = task.metric()
    metric.update(logits, target)
    out = metric.compute()
    assert set(out) == set(task.higher_is_better) == {"miou", "pixel_acc", "err"}
    expected = (2 * math.log(2.0) + math.log(4.0 / 3.0)) / 3
    assert out["err"].item() == pytest.approx(expected, rel=1e-6)
    assert task.higher_is_better == {"miou": True, "pixel_acc": True, "err": False}


# ------------------------------------------------------------------------------------------------ depth
def test_depth_metrics_by_hand():
    # Valid pixels (target > 3e-5): g = (2, 2, 1, 1), p = (2, 3, 0.6, -1); two invalid pixels.
    target = torch.tensor([2.0, 2.0, 1.0, 1.0, 0.0, 1e-5]).view(1, 1, 2, 3)
    pred = torch.tensor([2.0, 3.0, 0.6, -1.0, 5.0, 5.0]).view(1, 1, 2, 3)
    metric = DepthTask().metric()
    metric.update(pred, target)
    out = metric.compute()
    assert out["abs_err"].item() == pytest.approx((0 + 1 + 0.4 + 2) / 4)
    assert out["rel_err"].item() == pytest.approx((0 + 0.5 + 0.4 + 2) / 4)
    # max(p/g, g/p) = (1, 1.5, 1.667, fails since p <= 0) against 1.25, 1.5625, 1.953: in percent.
    assert out["delta1"].item() == pytest.approx(25.0)
    assert out["delta2"].item() == pytest.approx(50.0)
    assert out["delta3"].item() == pytest.approx(75.0)


def test_metric_with_no_valid_pixel_is_nan_not_an_error():
    metric = DepthTask().metric()
    metric.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert all(math.isnan(v.item()) for v in metric.compute().values())


# ---------------------------------------------------------------------------------------------- normals
def _vec(deg: float) -> list[float]:
    """Unit vector in the x-y plane at `deg` degrees from +x."""
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0]


ANGLES = [0.0, 10.0, 20.0, 29.0, 45.0, 90.0, 180.0]


def _normal_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels at the known ANGLES (predictions of random lengths), then one invalid (zero) target."""
    pred = torch.tensor([[3 * v for v in _vec(a)] for a in ANGLES] + [[1.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]] * len(ANGLES) + [[0.0, 0.0, 0.0]])
    return pred.T.reshape(1, 3, 1, -1), target.T.reshape(1, 3, 1, -1)


def test_angle_deg_at_0_90_180_and_tiny_angles():
    a = torch.tensor([_vec(0), _vec(0), _vec(0), _vec(0.01), [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 5)
    b = torch.tensor([_vec(0), _vec(90), _vec(180), _vec(0), _vec(0)]).T.reshape(1, 3, 1, 5)
    got = angle_deg(a, b).flatten().tolist()
    assert got == pytest.approx([0.0, 90.0, 180.0, 0.01, 90.0], abs=1e-5)  # zero prediction -> 90
    # Identical random vectors: acos of a rounded cosine would be off by ~0.02 degrees here.
    v = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert angle_deg(v, 2.5 * v).abs().max().item() < 1e-4


def test_normal_metrics_by_hand():
    task = NormalTask(metrics=[*NormalTask.default_metrics, "cosine_similarity"])
    metric = task.metric()
    metric.update(*_normal_case())
    out = metric.compute()
    assert out["mean_angle"].item() == pytest.approx(sum(ANGLES) / 7, abs=1e-4)
    # Exact median 29; the histogram interpolates inside the 0.01-degree bin [29, 29.01].
    assert out["median_angle"].item() == pytest.approx(29.0, abs=0.01 + 1e-6)
    assert out["within_11.25"].item() == pytest.approx(100 * 2 / 7)
    assert out["within_22.5"].item() == pytest.approx(100 * 3 / 7)
    assert out["within_30"].item() == pytest.approx(100 * 4 / 7)
    cos = sum(math.cos(math.radians(a)) for a in ANGLES) / 7
    assert out["cosine_similarity"].item() == pytest.approx(cos, abs=1e-6)


@pytest.mark.parametrize("bin_deg", [0.01, 0.5])
def test_histogram_median_matches_torch_median_within_a_bin(bin_deg):
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(3, 3, 20, 30, generator=g), torch.randn(3, 3, 20, 30, generator=g)
    target[0, :, :5] = 0.0  # some invalid pixels
    metric = NormalTask(median_bin_deg=bin_deg).metric()
    metric.update(pred, target)
    out = metric.compute()
    valid = (target != 0).any(dim=1)
    exact = angle_deg(pred, target)[valid]
    assert abs(out["median_angle"].item() - exact.median().item()) <= bin_deg + 1e-4
    assert out["mean_angle"].item() == pytest.approx(exact.mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------------------- regression
def test_regression_err_pooled_over_valid_pixels():
    metric = RegressionTask("keypoints", ignore_value=255).metric()
    metric.update(
        torch.tensor([1.0, 0.0, 3.0]).view(1, 1, 1, 3), torch.tensor([0.0, 255.0, 1.0]).view(1, 1, 1, 3)
    )
    metric.update(torch.tensor([5.0]).view(1, 1, 1, 1), torch.tensor([5.0]).view(1, 1, 1, 1))
    assert metric.compute() == {"err": pytest.approx(torch.tensor((1.0 + 2.0 + 0.0) / 3))}


# ----------------------------------------------------------------------------------- generic contract
def _task(name: str):
    return build_task(name, num_classes=5) if name == "seg" else build_task(name)


def _batch(task, seed: int, n: int = 2, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, task.out_channels, size // 2, size // 2, generator=g)  # half resolution
    if task.target_channels is None:  # a label map (seg, human_parts)
        target = torch.randint(0, 5, (n, size, size), generator=g)
        target[0, 0] = 255
    else:
        target = torch.rand(n, task.out_channels, size, size, generator=g) + 0.2
        target[0, :, 0] = 0.0
    return pred, target


def _all_metrics(name: str) -> tuple[str, ...]:
    return tuple(TASKS[name]().metric_directions) if name != "seg" else ("miou", "pixel_acc", "err")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_accumulating_updates_equals_one_big_update_and_merge(name):
    task = build_task(**{**_task(name).config(), "metrics": _all_metrics(name)})
    batches = [_batch(task, seed) for seed in range(3)]
    stepwise, merged, other = task.metric(), task.metric(), task.metric()
    for pred, target in batches:
        stepwise.update(pred, target)
    merged.update(*batches[0])
    for pred, target in batches[1:]:
        other.update(pred, target)
    merged.merge_state(other)  # the same sum reduction a multi-process sync performs
    big = task.metric()
    big.update(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    expected = big.compute()
    for result in (stepwise.compute(), merged.compute()):
        assert result.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(result[key], expected[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_states_are_sum_reduced_and_directions_cover_compute(name):
    for metrics in (None, _all_metrics(name)[:1], _all_metrics(name)):
        task = build_task(**{**_task(name).config(), "metrics": metrics})
        metric = task.metric()
        assert type(metric).full_state_update is False
        assert metric._reductions and all(fx is dim_zero_sum for fx in metric._reductions.values())
        batch_values = metric(*_batch(task, 0))  # forward: this batch only, also accumulated
        out = metric.compute()
        assert set(out) == set(task.higher_is_better) == set(batch_values) == set(task.metrics)
        assert all(v.dtype == torch.float32 and v.dim() == 0 for v in out.values())
        assert all(math.isfinite(v.item()) for v in out.values())


def test_unknown_metric_name_is_rejected():
    with pytest.raises(ValueError, match="subset of"):
        DepthTask(metrics=["rmse"])
    with pytest.raises(ValueError, match="subset of"):
        SegmentationTask(3, metrics=[])
