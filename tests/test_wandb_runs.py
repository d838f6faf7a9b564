"""wandb: the pipeline writes one run per training job and one per attack cell, each with its own identity."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_entry_point
from tests.wandb_records import offline_runs


def test_pipeline_runs_are_one_per_job_and_per_cell(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    proc = run_entry_point(
        "mtl_robust.pipeline",
        [
            "experiment=smoke",
            "logger=wandb",
            "logger.offline=true",
            "attack.steps=1",
            "eval.max_batches=1",
            "pipeline.directions=[total,dgba]",
            "trainer.max_steps=2",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = offline_runs(tmp_path / "logs")
    train = [r for r in runs if r.job_type == "train"]
    attack = [r for r in runs if r.job_type == "attack"]
    assert len(runs) == 3 and len(train) == 1 and len(attack) == 2
    (train,) = train
    assert not any(k.startswith("rel/") for k in train.history_keys | train.summary_keys), "cell in train run"
    assert any(k.startswith("train/loss") for k in train.history_keys)
    assert train.group == "smoke" and "layout=all_shared" in train.tags
    assert sorted(r.name for r in attack) == [
        "all_shared-none-pgd-dgba-eps8",
        "all_shared-none-pgd-total-eps8",
    ]
    for run in attack:
        assert run.group == "pipeline" and "rel/avg" in run.summary_keys and "eps=8/255" in run.tags
        assert not any(k.startswith("train/") for k in run.history_keys)
