"""Transfer attacks (`attack.surrogate`): a pipeline cell crafts on the surrogate (a checkpoint path, or
training choices the pipeline resolves through its checkpoint cache) and evaluates on the target; rows carry
the surrogate's model id, layout and defense; unreadable surrogates, surrogates with other tasks and
training choices outside the pipeline fail with one clear error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mtl_robust.attacks.config import attack_spec
from mtl_robust.jobs.surrogate import load_surrogate, surrogate_path
from mtl_robust.report.records import Record, load_records
from mtl_robust.report.write import write_report
from mtl_robust.values.surrogate import SurrogateSpec
from tests.conftest import compose_config

TINY = [
    "experiment=smoke",
    "trainer.max_steps=1",
    "data.dataset.height=16",
    "data.dataset.width=16",
    "data.splits.train.num_images=4",
    "data.splits.val.num_images=4",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "pipeline.directions=[total]",
    "attack.steps=1",
    "eval.progress=false",
    "eval.examples=0",
]


def test_a_pipeline_cell_crafts_on_its_surrogate(tmp_path: Path) -> None:
    from mtl_robust.jobs.pipeline import run_pipeline

    surrogate = "pipeline.surrogates=[{sharing: independent},{sharing: all_shared}]"
    cfg = compose_config("pipeline", [*TINY, surrogate], tmp_path)
    transfer, white_box = run_pipeline(cfg)
    assert transfer["status"] == white_box["status"] == "ok"
    assert transfer["config"]["surrogate_layout"] == "independent"
    assert transfer["config"]["surrogate_defense"] == "none"
    # Surrogate = the target's own training config: the same checkpoint, i.e. the white-box attack.
    assert white_box["config"]["surrogate_id"] == white_box["config"]["model_id"]
    assert transfer["config"]["surrogate_id"] != transfer["config"]["model_id"]
    assert transfer["results"]["rel_avg"] != white_box["results"]["rel_avg"]
    checkpoints = sorted((tmp_path / "logs" / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2  # the target's and the surrogate's training, both in the cache

    # The report: one surrogate x target matrix with CIs from the per-image statistics, transfer rows
    # left out of the white-box tables.
    out = tmp_path / "report"
    files = write_report(load_records([cfg.store]), out, stores=[cfg.store])
    (heatmap,) = [f for f in files if f.name.startswith("transfer_models_") and f.suffix == ".png"]
    table = (out / "tables" / heatmap.with_suffix(".md").name).read_text()
    assert "independent / none" in table and "all_shared / none" in table
    cells = [c.strip() for line in table.splitlines()[-2:] for c in line.split("|")[2:-1]]
    assert len(cells) == 2 and all(c.count("[") == 1 and "n/a" not in c for c in cells), table
    # The diagonal is the white-box cell: in the white-box tables too, the transfer row only in its matrix.
    (white_box_table,) = (out / "tables").glob("rel_*.md")
    rows = [line for line in white_box_table.read_text().splitlines() if line.startswith("| all_shared")]
    assert len(rows) == 1 and "| TOTAL |" in rows[0], white_box_table.read_text()

    # A checkpoint path works the same, also outside the pipeline; training choices need the pipeline.
    other = next(c for c in checkpoints if str(c) != white_box["config"]["checkpoint"])
    spec = attack_spec({"method": "pgd", "eps": 8 / 255, "surrogate": str(other)}, "total")
    assert surrogate_path(spec.surrogate, None) == other
    choices = SurrogateSpec.parse({"sharing": "independent"})
    with pytest.raises(ValueError, match="only the pipeline can train or find"):
        surrogate_path(choices, None)
    two_tasks = SimpleNamespace(tasks={"seg": None, "depth": None})
    with pytest.raises(ValueError, match="a transfer attack needs a surrogate with the target's tasks"):
        load_surrogate(other, two_tasks, torch.device("cpu"))


def test_bad_surrogates_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint '.*missing.ckpt' not found"):
        attack_spec({"method": "pgd", "eps": 8 / 255, "surrogate": str(tmp_path / "missing.ckpt")}, "dgba")
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="attack.surrogate: .*notes.ckpt"):
        load_surrogate(notes, SimpleNamespace(tasks={}), torch.device("cpu"))
    with pytest.raises(ValueError, match="not to an ensemble"):
        attack_spec({"method": "ensemble", "eps": 8 / 255, "surrogate": str(notes)}, "ensemble")
    with pytest.raises(ValueError, match="group=option pairs"):
        SurrogateSpec.parse({"sharing": ["a", "b"]})


def test_the_matrix_orders_models_and_marks_flagged_surrogates() -> None:
    from mtl_robust.report.transfer_models import transfer_model_sets

    def row(key, layout, defense, model_id, surrogate=None, rel=-0.5, flags=()):
        config = {
            "data": "synthetic",
            "backbone": "small_resnet",
            "method": "pgd",
            "direction": "dgba",
            "eps": 8 / 255,
            "layout_name": layout,
            "defense": defense,
            "model_id": model_id,
        }
        if surrogate is not None:
            config |= dict(zip(("surrogate_id", "surrogate_layout", "surrogate_defense"), surrogate))
        results = {"rel_avg": rel, "diagnostics": {"flags": list(flags)}}
        return Record("s", key, "ok", 0.0, config, results, "", Path("."))

    masked = ("m2", "independent", "adv_train:pgd-total")
    records = [
        row("a", "independent", "adv_train:pgd-total", "m2", flags=["zero_input_gradients:seg"]),
        row("b", "all_shared", "none", "m1", surrogate=masked, rel=-0.2),
        row("c", "all_shared", "none", "m1", surrogate=("m1", "all_shared", "none"), rel=-0.8),
        row(
            "d", "independent", "adv_train:pgd-total", "m2", surrogate=("m1", "all_shared", "none"), rel=-0.1
        ),
    ]
    (matrix,), _ = transfer_model_sets(records)
    assert [s.layout for s in matrix.surrogates] == ["all_shared", "independent"]  # undefended first
    table = matrix.table()
    assert table.columns == [
        "surrogate \\ target",
        "all_shared / none",
        "independent / adv_train:pgd-total ⚠",
    ]
    assert table.rows[0][0] == "all_shared / none" and table.rows[1][0].endswith("⚠")
    assert table.rows[0][1].startswith("-80.00 [n/a]") and table.rows[1][2] == "n/a"


def test_white_box_and_another_seeds_surrogate_stay_apart() -> None:
    """The target's own checkpoint (white-box, -60 %) and another seed's model of the same layout and
    defense (transfer, -10 %) are two cells, not one collision with a note about 'models L-0 and L-0'."""
    from mtl_robust.report.transfer_models import transfer_model_sets

    def row(key, surrogate_id, rel):
        config = {
            "data": "synthetic",
            "backbone": "small_resnet",
            "method": "pgd",
            "direction": "dgba",
            "eps": 8 / 255,
            "layout_name": "all_shared",
            "defense": "none",
            "model_id": "L-0",
            "seed": 0,
            "surrogate_id": surrogate_id,
            "surrogate_layout": "all_shared",
            "surrogate_defense": "none",
        }
        return Record("s", key, "ok", float(len(key)), config, {"rel_avg": rel}, "", Path("."))

    (matrix,), notes = transfer_model_sets([row("own", "L-0", -0.6), row("other", "L-1", -0.1)])
    table = matrix.table()
    cells = {r[0]: r[1] for r in table.rows}
    assert cells["all_shared / none"].startswith("-60.00")  # the diagonal: white-box
    assert cells["all_shared / none (another model)"].startswith("-10.00")
    assert not [n for n in notes if "several rows" in n]
