"""Adding a direction takes two files: the direction's module and one yaml (CONTRIBUTING.md). This test adds
a toy one exactly so, outside the package, attacks a checkpoint with it from the command line, and finds it
in the report under its own name and colour."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from matplotlib.colors import same_color

import mtl_robust.attacks.directions as attack_directions
import mtl_robust.values.direction as direction_values
from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.train import train
from mtl_robust.report import load_records, write_report
from tests.conftest import compose_config, run_entry_point
from tests.test_report_directions import line_colours

DIRECTION_FILE = '''
import torch

from mtl_robust.attacks.directions import Direction, register_direction
from mtl_robust.values import DirectionStyle


@register_direction(DirectionStyle("TOY", colour="tab:green", order=3))
class LargestLoss(Direction):
    """Ascend each sample's currently largest task loss."""

    name = "toy"

    def objective(self, losses, valid, state):
        stacked = torch.stack([torch.where(valid[t], losses[t], torch.zeros_like(losses[t])) for t in losses])
        return stacked.max(dim=0).values
'''

DIRECTION_YAML = """
name: toy
module: toy_direction
task: null
"""


def add_toy_direction(root: Path) -> tuple[Path, Path]:
    """The two files a contributor writes: the direction module and conf/direction/toy.yaml."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "toy_direction.py").write_text(textwrap.dedent(DIRECTION_FILE))
    (root / "conf" / "direction").mkdir(parents=True)
    (root / "conf" / "direction" / "toy.yaml").write_text(DIRECTION_YAML)
    return root / "pkg", root / "conf"


def test_a_new_direction_needs_its_file_and_one_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package, conf = add_toy_direction(tmp_path / "contrib")
    trained = train(compose_config("train", ["experiment=smoke", "train.max_epochs=1"], tmp_path / "train"))

    monkeypatch.setenv("PYTHONPATH", str(package))  # after the repository, in run_entry_point
    proc = run_entry_point(
        "mtl_robust.attack",
        [
            "-m",
            f"ckpt={trained.checkpoint}",
            "experiment=smoke",
            "eval.progress=false",
            "eval.max_batches=1",
            "attack.steps=2",
            "attack.eps=4/255,8/255",
            "direction=toy,dgba",
            f"hydra.searchpath=[file://{conf}]",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "logs" / "results" / "default.jsonl"
    rows = ResultsStore(store).latest().values()
    assert {r["config"]["direction"] for r in rows} == {"toy", "dgba"}
    assert all(r["status"] == "ok" for r in rows)
    by_cell = {(r["config"]["direction"], r["config"]["pixel_eps"]): r["results"]["rel_avg"] for r in rows}
    # the toy objective itself steered its cells (a fallback to another direction would repeat DGBA's)
    assert by_cell[("toy", 4.0)] != by_cell[("dgba", 4.0)] and by_cell[("toy", 8.0)] != by_cell[("dgba", 8.0)]

    # The report process knows the direction once its module is imported (the module registers its style).
    monkeypatch.setattr(direction_values, "_STYLES", dict(direction_values._STYLES))
    monkeypatch.setattr(attack_directions, "DIRECTIONS", dict(attack_directions.DIRECTIONS))
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "toy_direction", raising=False)
    __import__("toy_direction")

    out = tmp_path / "report"
    write_report(load_records([store]), out, [store])
    summary = (out / "summary.md").read_text()
    assert "TOY" in summary and "| toy |" not in summary
    assert same_color(line_colours(store)["TOY"], "tab:green")
    monkeypatch.delitem(sys.modules, "toy_direction")
