"""Sweeps beyond one process: launchers, failing jobs, resumed sweeps, the studies' smoke commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.train import train
from tests.conftest import compose_config, run_entry_point

QUICK = ["experiment=smoke", "eval.progress=false", "attack.steps=1", "eval.max_batches=1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    return train(compose_config("train", ["experiment=smoke"], out)).checkpoint


def cells(root: Path, study: str = "default") -> dict[str, dict]:
    return ResultsStore(root / "logs" / "results" / f"{study}.jsonl").latest()


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_attack_sweeps(checkpoint: Path, tmp_path: Path, launcher: str) -> None:
    proc = run_entry_point(
        "mtl_robust.attack",
        ["-m", f"launcher={launcher}", f"ckpt={checkpoint}", *QUICK, "direction=total,dgba"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = cells(tmp_path)
    assert sorted(r["config"]["direction"] for r in rows.values()) == ["dgba", "total"]
    assert all(r["status"] == "ok" for r in rows.values())


def test_a_failing_job_is_recorded_and_the_others_finish(checkpoint: Path, tmp_path: Path) -> None:
    proc = run_entry_point(
        "mtl_robust.attack",
        ["-m", f"ckpt={checkpoint}", *QUICK, "direction=single", "direction.task=seg,edges,depth"],
        tmp_path,
    )
    # The sweep finishes the other jobs, then says so and exits non-zero so that scripts notice.
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "multirun: 1 of 3 jobs failed (job 1)" in proc.stderr and "direction.task=edges" in proc.stderr
    rows = list(cells(tmp_path).values())
    ok = sorted(r["config"]["direction"] for r in rows if r["status"] == "ok")
    failed = [r for r in rows if r["status"] == "failed"]
    assert ok == ["single:depth", "single:seg"]
    assert len(failed) == 1 and "edges" in failed[0]["error"]
    assert "direction.task=edges" in failed[0]["config"]["overrides"]

    report = run_entry_point(
        "mtl_robust.report",
        ["--store", str(tmp_path / "logs/results/default.jsonl"), "--out", str(tmp_path / "report")],
        tmp_path,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    summary = (tmp_path / "report" / "summary.md").read_text()
    # the failed job is named by its overrides, not as "?/? · layout ?"
    assert "direction=single direction.task=edges" in summary and "layout ?" not in summary


def test_failed_jobs_are_withdrawn_when_their_retry_succeeds(checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    late = tmp_path / "late.ckpt"  # not there yet: both jobs fail before writing any cell row
    args = ["-m", f"ckpt={late}", *QUICK, "attack.eps=2/255,4/255"]
    first = run_entry_point(
        "mtl_robust.attack", [*args, "hydra.callbacks.job_failures.exit_status=0"], tmp_path
    )
    assert first.returncode == 0, first.stderr[-3000:]  # the user asked for exit status 0 despite failures
    assert "multirun: 2 of 2 jobs failed" in first.stderr
    assert [r["status"] for r in cells(tmp_path).values()] == ["failed", "failed"]

    shutil.copyfile(checkpoint, late)
    second = run_entry_point("mtl_robust.attack", args, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "multirun: all 2 jobs succeeded" in second.stderr
    rows = cells(tmp_path)
    assert sorted(r["status"] for r in rows.values()) == ["ok", "ok"], "the job failures were not withdrawn"
    report = run_entry_point(
        "mtl_robust.report",
        ["--store", str(tmp_path / "logs/results/default.jsonl"), "--out", str(tmp_path / "report")],
        tmp_path,
    )
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert report.returncode == 0 and "2 cells, 2 ok, 0 failed" in summary and "No failed cells." in summary


# A direction whose cells fail at attack time (after the job built and validated everything): a cell failure,
# not a job failure.
FAILING_DIRECTION = """
from mtl_robust.attacks.directions import Direction, register_direction
from mtl_robust.values import DirectionStyle


@register_direction(DirectionStyle("BOOM"))
class Boom(Direction):
    name = "boom"

    def objective(self, losses, valid, state):
        raise RuntimeError("boom: this direction always fails")
"""


@pytest.mark.slow
def test_a_failed_cell_makes_the_sweep_exit_non_zero(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "boom_direction.py").write_text(FAILING_DIRECTION)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pkg"))
    args = [
        "-m",
        f"ckpt={checkpoint}",
        *QUICK,
        "direction.name=total,boom",
        "+direction.module=boom_direction",
    ]
    proc = run_entry_point("mtl_robust.attack", args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "multirun: 1 cell failed in 1 of 2 jobs (job 1); first: 1 of 1 cells failed" in proc.stderr
    assert "boom: this direction always fails" in proc.stderr
    rows = cells(tmp_path).values()
    # the failed cell is a row of its own; no job-level failure row was added
    assert sorted((r["config"].get("direction"), r["status"]) for r in rows) == [
        ("boom", "failed"),
        ("total", "ok"),
    ]


def test_a_single_run_with_a_failed_cell_prints_its_tables_then_exits_1(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtl_robust.jobs.runner as runner

    monkeypatch.setattr(runner, "in_multirun", lambda: False)  # whatever Hydra state earlier tests left
    from omegaconf import OmegaConf

    from mtl_robust.jobs.failures import check_cells
    from mtl_robust.jobs.runner import run_job

    rows = [
        {"status": "ok", "config": {"method": "pgd", "direction": "total"}},
        {
            "status": "failed",
            "config": {"method": "pgd", "direction": "dgba"},
            "error": "RuntimeError: oom\n...",
        },
    ]

    def job(cfg):
        print("the tables")
        check_cells(rows, "logs/results/x.jsonl", 0.5)
        return 0.5

    with pytest.raises(SystemExit) as exit_info:
        run_job(OmegaConf.create({}), job)
    assert capsys.readouterr().out == "the tables\n"
    assert str(exit_info.value.code).startswith(
        "error: 1 of 2 cells failed (first: pgd dgba: RuntimeError: oom); their rows in logs/results/x.jsonl"
    )
    assert run_job(OmegaConf.create({}), lambda cfg: check_cells(rows[:1], "x.jsonl", 1.0)) is None


def test_the_sweep_verdict_counts_failed_jobs_and_failed_cells(tmp_path: Path) -> None:
    from mtl_robust.jobs.failures import sweep_verdict

    (tmp_path / "0.ok").write_text("")
    assert sweep_verdict(tmp_path) == ("multirun: all 1 jobs succeeded", False)
    (tmp_path / "1.cells-failed").write_text("2 of 5 cells failed (first: pgd dgba: x)\nattack.eps=8/255")
    (tmp_path / "2.cells-failed").write_text("1 of 5 cells failed (first: pgd total: y)\nattack.eps=4/255")
    (tmp_path / "10.failed").write_text("attack.eps=2/255\nValueError: bad")
    line, failed = sweep_verdict(tmp_path)
    assert failed
    assert line.startswith(
        "multirun: 1 of 4 jobs failed (job 10); 3 cells failed in 2 of 4 jobs (job 1, 2); "
        "first: attack.eps=2/255 | ValueError: bad"
    )


def test_a_resumed_sweep_recomputes_no_finished_cell(checkpoint: Path, tmp_path: Path) -> None:
    first = run_entry_point(
        "mtl_robust.attack", ["-m", f"ckpt={checkpoint}", *QUICK, "attack.eps=2/255,4/255"], tmp_path
    )
    assert first.returncode == 0, first.stderr[-3000:]
    store = ResultsStore(tmp_path / "logs" / "results" / "default.jsonl")
    done_before = {r["key"]: r["time"] for r in store.rows()}
    second = run_entry_point(
        "mtl_robust.attack",
        ["-m", f"ckpt={checkpoint}", *QUICK, "attack.eps=2/255,4/255,6/255,8/255"],
        tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    rows = store.rows()
    assert len(rows) == 4, "finished cells were written again"
    assert {r["key"]: r["time"] for r in rows if r["key"] in done_before} == done_before


STUDIES = ["study_transfer_smoke", "study_tradeoff_smoke", "study_directions_smoke"]
# What the README promises each study's report holds: file-name prefix -> how many (plots/, tables/).
PROMISED_PLOTS = {
    # RQ1: a transfer heatmap per layout and eps (4 x 2), eps curves per layout, example grids
    "study_transfer_smoke": {"transfer_": 8, "eps_": 4, "example_": 1},
    # RQ3: the sharing-vs-robustness scatter over all six layouts
    "study_tradeoff_smoke": {"tradeoff_": 1, "example_": 1},
    # RQ2: eps curves per method (4) x layout (3) x defense (2), heatmaps, examples
    "study_directions_smoke": {"eps_": 24, "transfer_": 1, "example_": 1},
}
PROMISED_TABLES = {
    "study_transfer_smoke": {"transfer_": 8, "rel_": 2, "clean_": 1},
    "study_tradeoff_smoke": {"tradeoff_": 1, "rel_": 1, "clean_": 1},
    "study_directions_smoke": {"rel_": 16, "clean_": 2},
}


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_study_smoke_commands_as_written(study_root: Path, study: str) -> None:
    tmp_path = study_root
    proc = run_entry_point("mtl_robust.pipeline", [f"experiment={study}"], tmp_path, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = study.removeprefix("study_")
    rows = cells(tmp_path, name)
    assert rows and all(r["status"] == "ok" for r in rows.values())
    report = tmp_path / "logs" / "reports" / name
    summary = (report / "summary.md").read_text()
    for folder, promised, suffix in (("plots", PROMISED_PLOTS, "png"), ("tables", PROMISED_TABLES, "csv")):
        names = [p.name for p in (report / folder).glob(f"*.{suffix}")]
        for prefix, count in promised[study].items():
            found = sum(n.startswith(prefix) for n in names)
            assert found >= count, f"{folder}/{prefix}*.{suffix}: {found} < {count} promised"
    if study == "study_tradeoff_smoke":  # every layout gets a clean gain: the baseline "2" is independent
        (table,) = (report / "tables").glob("tradeoff_*.csv")
        assert len(table.read_text().strip().splitlines()) == 1 + 6
        assert "scatter skipped" not in summary
    assert "cell " in proc.stderr and "ETA" in proc.stderr and "\r" not in proc.stdout
