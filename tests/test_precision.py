"""eval.precision: the parser, the autocast wrapper (float32 outputs, float32 x_adv in the ball and range,
gradients through), and the row key (unchanged at 32, different at bf16)."""

from __future__ import annotations

import pytest
import torch

from mtl_robust.attacks import PGD
from mtl_robust.attacks.precision import AutocastModel, parse_precision, with_precision
from mtl_robust.evaluation.runner import row_key
from mtl_robust.evaluation.store import config_key
from tests.attack_stubs import TreeStub, make_batch, stub_losses

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "value, parsed",
    [(32, "32"), ("32", "32"), ("fp32", "32"), ("bf16", "bf16"), ("bf16-mixed", "bf16"), (16, "16")],
)
def test_precision_values_parse_to_one_form(value, parsed):
    assert parse_precision(value) == parsed


def test_unknown_precision_fails_clearly():
    with pytest.raises(ValueError, match="eval.precision must be one of"):
        parse_precision("8")


def test_float32_returns_the_model_itself():
    model = TreeStub()
    assert with_precision(model, "32") is model


@pytest.mark.parametrize("precision", ["bf16", "16"])
@pytest.mark.parametrize("direction", ["dgba", "minmax"])
def test_reduced_precision_attacks_keep_float32_inputs_in_the_ball(precision, direction):
    model = with_precision(TreeStub(), precision)
    assert isinstance(model, AutocastModel)
    x, targets = make_batch(n=2, h=5, w=5)
    preds = model(x)
    assert all(p.dtype == torch.float32 for p in preds.values())
    eps = 8 / 255
    x_adv = PGD(eps, steps=2, direction=direction)(model, x, targets, stub_losses())
    assert x_adv.dtype == torch.float32
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert (x_adv != x).any()  # gradients came through the autocast forward


def test_precision_is_in_the_row_key_except_at_the_default():
    info = {"model_id": "m", "data_id": "d", "checkpoint": "c.ckpt"}
    cell = {"method": "pgd", "eps": 8 / 255}
    legacy = config_key({"model_id": "m", "data_id": "d", **cell})  # keys written before the option
    assert row_key({**info, "precision": "32"}, cell) == legacy
    assert row_key(info, cell) == legacy
    assert row_key({**info, "precision": "bf16"}, cell) != legacy
