"""wandb through the user's command: a study's multirun ends with its report as a wandb run (Hydra's
multirun end, where no job's Hydra config exists any more), every run lands in WANDB_DIR, and a report that
cannot be logged fails the sweep with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_entry_point
from tests.wandb_records import offline_runs


def test_a_multirun_study_report_reaches_wandb_dir(tmp_path: Path, monkeypatch) -> None:
    wandb_dir = tmp_path / "wandb"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    proc = run_entry_point(
        "mtl_robust.pipeline",
        [
            "-m",
            "experiment=smoke",
            "logger=wandb",
            "hydra/callbacks=report",
            "study=wtest",
            "attack.steps=1",
            "eval.max_batches=1",
            "trainer.max_steps=2",
            "pipeline.directions=[total]",
            "sharing=all_shared",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "anonymous" not in proc.stdout + proc.stderr, "a deprecated wandb setting is passed"
    assert not list((tmp_path / "logs").rglob("*.wandb")), "runs ignore WANDB_DIR"
    runs = {r.job_type: r for r in offline_runs(wandb_dir)}
    assert sorted(runs) == ["attack", "report", "train"]
    assert runs["train"].name == "all_shared-none-train"
    assert runs["attack"].name == "all_shared-none-pgd-total-eps8"
    report = runs["report"]
    assert report.group == "wtest" and report.name == "wtest-report"
    kinds = {k[: -len("/_type")]: json.loads(v) for k, v in report.history.items() if k.endswith("/_type")}
    assert kinds["summary"] == "html-file"
    assert any(k.startswith("tables/rel_") and v == "table-file" for k, v in kinds.items()), kinds
    assert any(k.startswith("plots/") and v == "image-file" for k, v in kinds.items()), kinds
    # the dashboard's relative change is in percent, as the terminal shows it
    assert "rel_unit" in runs["attack"].summary_keys


def test_a_report_that_fails_fails_the_sweep_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from omegaconf import OmegaConf

    from mtl_robust.jobs import failures
    from mtl_robust.jobs.hydra_callbacks import ReportOnMultirunEnd

    monkeypatch.setattr(failures, "_sweep_exit_status", 0)
    monkeypatch.setattr("mtl_robust.jobs.report.main", lambda argv: None)  # the report itself is written
    callback = ReportOnMultirunEnd(str(tmp_path / "results.jsonl"), str(tmp_path / "report"))
    logger = {"_target_": "tests.test_wandb_multirun.BrokenWandb"}
    callback.on_multirun_end(OmegaConf.create({"logger": logger, "study": "s"}))
    err = capsys.readouterr().err.strip().splitlines()
    assert failures._sweep_exit_status == 1
    assert [line for line in err if line.startswith("error:")] == [err[-1]]
    assert "report" in err[-1] and str(tmp_path / "report") in err[-1]


class BrokenWandb:  # "Wandb" in its target makes it the wandb logger for is_wandb
    def __init__(self, **kwargs) -> None:
        raise RuntimeError("wandb is down\nsecond line")


@pytest.mark.parametrize(
    "cell, parsed",
    [
        ("5503e53a1acb", "5503e53a1acb"),  # text in a text column, even where it parses alone
        ("123e4567", "123e4567"),
    ],
)
def test_report_tables_keep_one_type_per_column(tmp_path: Path, cell: str, parsed: str) -> None:
    from mtl_robust.jobs.report_wandb import read_table

    path = tmp_path / "t.csv"
    path.write_text(f"model_id,gain\n5503e53a1acb,1.5\n{cell},\n")
    columns, rows = read_table(path)
    assert columns == ["model_id", "gain"]
    assert rows == [["5503e53a1acb", 1.5], [parsed, None]]


def test_the_dashboard_shows_relative_changes_in_percent() -> None:
    from mtl_robust.jobs.loggers import flat_metrics, per_task_table

    row = {
        "results": {
            "clean": {"seg": {"miou": 0.5}},
            "adv": {"seg": {"miou": 0.25}},
            "rel": {"seg": {"miou": -0.5}},
            "rel_task": {"seg": -0.5},
            "rel_avg": -0.0014,
        }
    }
    metrics = flat_metrics(row)
    assert metrics["rel/avg"] == pytest.approx(-0.14) and metrics["rel/seg/miou"] == pytest.approx(-50.0)
    assert metrics["clean/seg/miou"] == 0.5  # metrics keep their own units
    columns, data = per_task_table(row)
    assert columns[-1] == "relative change (%)" and data == [["seg", "miou", 0.5, 0.25, -50.0]]
