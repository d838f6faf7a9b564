"""Target sets and STEALTH end to end: a multirun over sets from the command line writes one row per set,
each evaluating every task; a stealth row records its budget in its direction text."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.attack import evaluate_checkpoint
from mtl_robust.jobs.train import train
from tests.conftest import compose_config, run_entry_point

QUICK = ["experiment=smoke", "eval.progress=false", "attack.steps=2", "eval.max_batches=1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    return train(compose_config("train", ["experiment=smoke", "train.max_epochs=1"], out)).checkpoint


def test_a_multirun_over_target_sets_writes_a_row_per_set_on_every_task(
    checkpoint: Path, tmp_path: Path
) -> None:
    proc = run_entry_point(
        "mtl_robust.attack",
        ["-m", f"ckpt={checkpoint}", *QUICK, "direction=dgba", "+direction.tasks=[depth,seg],[depth]"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = ResultsStore(tmp_path / "logs" / "results" / "default.jsonl").latest().values()
    assert {r["config"]["direction"] for r in rows} == {"dgba@seg+depth", "dgba@depth"}
    for r in rows:
        assert r["status"] == "ok"
        assert set(r["results"]["rel_task"]) == {"seg", "normal", "depth"}  # transfer to the rest too


def test_a_stealth_row_and_an_unknown_target(compose, checkpoint: Path) -> None:
    overrides = [f"ckpt={checkpoint}", *QUICK, "direction=stealth", "direction.budget=0.1"]
    cfg = compose(overrides, config_name="attack")
    pair = [
        (
            OmegaConf.to_container(cfg.attack, resolve=True),
            OmegaConf.to_container(cfg.direction, resolve=True),
        )
    ]
    (row,), _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pair)
    assert row["status"] == "ok" and row["config"]["direction"] == "stealth:0.1@depth"
    cfg = compose([*overrides, "direction.tasks=[edges]"], config_name="attack")
    pair = [
        (
            OmegaConf.to_container(cfg.attack, resolve=True),
            OmegaConf.to_container(cfg.direction, resolve=True),
        )
    ]
    with pytest.raises(ValueError, match="unknown target task"):  # before the clean pass, not as a cell
        evaluate_checkpoint(cfg, cfg.ckpt, pair)
