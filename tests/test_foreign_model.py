"""Bring your own model: a plain `forward(x)` network from outside the project, attacked and evaluated."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from mtl_robust.attacks import PGD, MultiTaskAdapter
from mtl_robust.attacks.model_call import forward_tasks
from tests.attack_stubs import make_batch, stub_losses
from tests.conftest import run_entry_point


class ForeignNet(nn.Module):
    """LibMTL-style: no `tasks` keyword, one shared encoder, a dict of dense outputs."""

    def __init__(self, classes: int = 4, width: int = 6) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.seg = nn.Conv2d(width, classes, 1)
        self.normal = nn.Conv2d(width, 3, 1)
        self.depth = nn.Conv2d(width, 1, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.encoder(x)
        return {"seg": self.seg(h), "normal": self.normal(h), "depth": self.depth(h)}


class ForeignListNet(ForeignNet):
    """Returns a list, in the order seg, normal, depth."""

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        out = super().forward(x)
        return [out["seg"], out["normal"], out["depth"]]


def test_plain_forward_model_is_attacked_without_tasks_keyword():
    torch.manual_seed(0)
    model = ForeignNet()
    x, targets = make_batch(n=2, h=6, w=6)
    x_adv = PGD(8 / 255, steps=3, direction="dgba")(model, x, targets, stub_losses())
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert not torch.equal(x_adv, x)


def test_list_output_needs_names_and_then_matches_the_dict_model():
    torch.manual_seed(0)
    dict_model = ForeignNet()
    list_model = ForeignListNet()
    list_model.load_state_dict(dict_model.state_dict())
    x, targets = make_batch(n=2, h=6, w=6)
    with pytest.raises(TypeError, match="task_names"):
        PGD(8 / 255, steps=2)(list_model, x, targets, stub_losses())
    adapted = MultiTaskAdapter(list_model, task_names=["seg", "normal", "depth"])
    a = PGD(8 / 255, steps=2, direction="total")(adapted, x, targets, stub_losses())
    b = PGD(8 / 255, steps=2, direction="total")(dict_model, x, targets, stub_losses())
    assert torch.allclose(a, b)
    assert set(forward_tasks(adapted, x, ["depth"])) == {"depth"}


def test_attack_entry_point_evaluates_a_foreign_model(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "foreign.pt"
    torch.save(ForeignNet(classes=8).state_dict(), weights)
    proc = run_entry_point(
        "mtl_robust.attack",
        [
            "model={_target_: tests.test_foreign_model.ForeignNet, classes: 8}",
            f"model_weights={weights}",
            "attack=pgd",
            "attack.steps=2",
            "direction=dgba",
            "data.dataset.height=16",
            "data.dataset.width=16",
            "data.splits.val.num_images=4",
            "eval.batch_size=4",
            "eval.progress=false",
            "eval.examples=0",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model: ForeignNet" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "logs/results/default.jsonl").read_text().splitlines()]
    assert rows[-1]["status"] == "ok"
    assert rows[-1]["config"]["backbone"] == "tests.test_foreign_model.ForeignNet"
    assert rows[-1]["results"]["rel_avg"] < 0


@pytest.mark.slow
def test_a_libmtl_style_model_goes_through_a_whole_study(tmp_path):
    """List output, no `tasks` keyword, the user's task order: attacked by the reliability study (no
    training), its rows carry its fingerprint, and the study's report lists it like any model."""
    torch.manual_seed(0)
    weights = tmp_path / "libmtl.pt"
    torch.save(ForeignListNet(classes=8).state_dict(), weights)
    proc = run_entry_point(
        "mtl_robust.pipeline",
        [
            "experiment=study_reliability_smoke",
            "model={_target_: tests.test_foreign_model.ForeignListNet, classes: 8}",
            f"model_weights={weights}",
            "model_task_names=[seg,normal,depth]",
            # the study's training axes mean nothing for a model it does not train: one job
            "hydra.sweeper.params.sharing=all_shared",
            "hydra.sweeper.params.seed=0",
            "hydra.sweeper.params.defense=none",
            "pipeline.eps=[8/255]",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model: tests.test_foreign_model.ForeignListNet" in proc.stdout
    assert "train epoch" not in proc.stderr  # nothing was trained
    rows = [
        json.loads(line)
        for line in (tmp_path / "logs/results/reliability_smoke.jsonl").read_text().splitlines()
    ]
    assert rows and all(r["status"] == "ok" for r in rows)
    assert {r["config"]["model_id"] for r in rows} == {rows[0]["config"]["model_id"]}
    assert rows[0]["config"]["backbone"] == "tests.test_foreign_model.ForeignListNet"
    (ensemble,) = [r for r in rows if r["config"]["method"] == "ensemble"]  # beside the study's PGD cells
    assert ensemble["results"]["rel_avg"] < 0
    summary = (tmp_path / "logs/reports/reliability_smoke/summary.md").read_text()
    assert "ForeignListNet" in summary
