"""The values that travel through the layers: budgets and direction specs, parsed and formatted once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mtl_robust.values import DirectionSpec, format_eps, parse_eps
from mtl_robust.values.budget import budget_from, eps_slug, from_pixels, parse_budget, to_pixels
from mtl_robust.values.direction import DEFAULT_TAU, expand_per_task


@pytest.mark.parametrize("text", ["8/255", "0.5/255", "0.03", "1/255", "16/255", "0"])
def test_eps_text_round_trips(text: str) -> None:
    eps = parse_eps(text)
    assert parse_eps(format_eps(eps)) == pytest.approx(eps, rel=1e-9, abs=1e-12)


def test_budget_units_agree() -> None:
    assert from_pixels(8) == parse_budget("8/255") == 8 / 255
    assert to_pixels(8 / 255) == pytest.approx(8.0)
    assert format_eps(8 / 255) == "8/255" and eps_slug(8 / 255) == "eps8" and eps_slug(0.5 / 255) == "eps0p5"
    assert budget_from(pixel_eps=8) == budget_from(eps="8/255")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 8}, r"must lie in \[0, 1\]"),
        ({"eps": "8/255", "pixel_eps": 8}, "given twice"),
        ({}, "needs a budget"),
        ({"eps": "eight"}, "fraction like '8/255'"),
    ],
)
def test_bad_budgets_say_what_to_type(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        budget_from(**kwargs)
    assert "attack.pixel_eps=8" in str(err.value)


@pytest.mark.parametrize("text", ["total", "dgba", "single:seg", "dgba:1e-06", "minmax", "sign_sum"])
def test_direction_text_round_trips(text: str) -> None:
    assert str(DirectionSpec.parse(text)) == text


def test_direction_config_forms_match_text_forms() -> None:
    assert DirectionSpec.from_config({"name": "single", "task": "seg"}) == DirectionSpec.parse("single:seg")
    assert str(DirectionSpec.from_config({"name": "dgba", "task": None})) == "dgba"
    # an argument at its default is not written (existing store keys stay), any other is kept
    assert str(DirectionSpec.from_config({"name": "dgba", "tau": DEFAULT_TAU})) == "dgba"
    assert str(DirectionSpec.from_config({"name": "dgba", "tau": 1e-6})) == "dgba:1e-06"
    assert DirectionSpec.parse("dgba:1e-06").kwargs() == {"tau": 1e-6}


def test_direction_labels_and_order() -> None:
    specs = [DirectionSpec.parse(t) for t in ["dgba", "sign_sum", "total", "single:depth", "single:seg"]]
    ordered = sorted(specs, key=lambda s: s.sort_key())
    assert [s.label for s in ordered] == ["SINGLE(seg)", "SINGLE(depth)", "TOTAL", "DGBA", "sign_sum"]
    assert DirectionSpec.parse("dgba:1e-06").label == "DGBA(tau=1e-06)"


def test_per_task_directions_expand_and_need_their_task() -> None:
    assert [str(s) for s in expand_per_task(["single", "dgba"], ["seg", "depth"])] == [
        "single:seg",
        "single:depth",
        "dgba",
    ]
    with pytest.raises(ValueError, match="needs its task"):
        DirectionSpec.parse("single")
    with pytest.raises(ValueError, match="nothing after"):
        DirectionSpec.parse("single:")


def test_values_import_without_torch() -> None:
    code = "import sys, mtl_robust.values; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
