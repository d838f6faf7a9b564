"""The paper's relative-change measure on hand-computed values."""

from __future__ import annotations

import math

import pytest

from mtl_robust.evaluation.relative import compare, relative_change


def test_sign_convention_negative_means_worse() -> None:
    assert relative_change(0.5, 0.4, higher_is_better=True) == pytest.approx(-0.2)
    assert relative_change(20.0, 25.0, higher_is_better=False) == pytest.approx(-0.25)
    assert relative_change(20.0, 15.0, higher_is_better=False) == pytest.approx(0.25)
    assert math.isnan(relative_change(0.0, 0.1, higher_is_better=True))


def test_tasks_average_their_metrics_first() -> None:
    clean = {"seg": {"miou": 0.5, "pixel_acc": 0.8}, "depth": {"abs_err": 0.5}}
    adv = {"seg": {"miou": 0.25, "pixel_acc": 0.8}, "depth": {"abs_err": 1.0}}
    directions = {"seg": {"miou": True, "pixel_acc": True}, "depth": {"abs_err": False}}
    result = compare(clean, adv, directions, {"seg": 1.0, "depth": 0.5}, {"seg": 3.0, "depth": 0.5})
    assert result.per_metric["seg"] == {"miou": pytest.approx(-0.5), "pixel_acc": pytest.approx(0.0)}
    assert result.per_task == {"seg": pytest.approx(-0.25), "depth": pytest.approx(-1.0)}
    assert result.average == pytest.approx(-0.625)  # tasks weigh equally, not metrics
    assert result.loss_per_task == {"seg": pytest.approx(-2.0), "depth": pytest.approx(0.0)}
    assert result.loss_average == pytest.approx(-1.0)


def test_missing_task_is_an_error() -> None:
    with pytest.raises(KeyError, match="depth"):
        compare(
            {"seg": {"miou": 1.0}},
            {"seg": {"miou": 1.0}},
            {"seg": {"miou": True}, "depth": {"abs_err": False}},
        )
