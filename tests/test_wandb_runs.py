"""wandb: the pipeline writes one run per training job and one per attack cell, each with its own identity."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_entry_point
from tests.wandb_records import offline_runs


def test_pipeline_runs_are_one_per_job_and_per_cell(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))  # where runs go when it is set
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
    runs = offline_runs(tmp_path / "wandb")
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


def test_a_study_report_is_one_report_run_with_tables_figures_and_summary(
    tmp_path: Path, monkeypatch
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from omegaconf import OmegaConf

    from mtl_robust.jobs.report_wandb import is_wandb, log_report
    from tests.conftest import compose_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    cfg = compose_config(
        "pipeline", ["experiment=study_reliability_smoke", "logger=wandb", "logger.offline=true"], tmp_path
    )
    assert is_wandb(cfg.logger), "logger=wandb must reach a study (its scale must not null the logger)"
    assert not is_wandb(compose_config("pipeline", ["experiment=study_reliability_smoke"], tmp_path).logger)

    out = tmp_path / "report"
    (out / "tables").mkdir(parents=True)
    (out / "plots").mkdir()
    (out / "tables" / "relative.csv").write_text(
        "method,direction,rel_avg\npgd,dgba,-0.88\npgd,total,-0.68\n"
    )
    (out / "tables" / "clean.csv").write_text("task,metric,clean\nseg,miou,0.31\n")
    plt.plot([0, 1], [0, -1])
    plt.savefig(out / "plots" / "eps_curve.png")
    plt.close("all")
    (out / "summary.md").write_text("# Robustness report\n\n| a | b |\n|---|---|\n| 1 | <2> |\n")

    counts = log_report(cfg.logger, "reliability_smoke", out)
    assert counts == {"tables": 2, "figures": 1, "summary": 1}
    (run,) = offline_runs(tmp_path)
    assert (
        run.job_type == "report"
        and run.group == "reliability_smoke"
        and run.name == "reliability_smoke-report"
    )
    for key, kind in [
        ("tables/relative", "table-file"),
        ("tables/clean", "table-file"),
        ("plots/eps_curve", "image-file"),
        ("summary", "html-file"),
    ]:
        assert run.history.get(f"{key}/_type") == f'"{kind}"', (key, run.history)
    # the study's training runs are grouped under the same name (logger.group is the task name, the study)
    assert OmegaConf.select(cfg, "logger.group") == "reliability_smoke"
