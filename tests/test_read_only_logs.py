"""Folders that cannot be written: Hydra's run folder and the report folder fail in one line naming the
folder and the way out, and a finished pipeline reruns on a read-only `logs/` (it only reads)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_entry_point

QUICK = ["experiment=smoke", "attack.steps=1", "eval.max_batches=1", "eval.examples=0", "trainer.max_steps=2"]


def _not_a_folder(tmp_path: Path) -> Path:
    """A path no process can create, root or not: its parent is a file."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    return blocker / "folder"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_a_run_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    folder = _not_a_folder(tmp_path)
    proc = run_entry_point("mtl_robust.pipeline", [*QUICK, f"hydra.run.dir={folder}"], tmp_path)
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert line.startswith("error: cannot create Hydra's output folder") and str(folder) in line
    assert "hydra.run.dir=<folder>" in line
    assert not (tmp_path / "logs" / "checkpoints").exists(), "it trained before failing"


def test_a_sweep_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    folder = _not_a_folder(tmp_path)
    proc = run_entry_point(
        "mtl_robust.train", ["-m", *QUICK[:1], "seed=0,1", f"hydra.sweep.dir={folder}"], tmp_path
    )
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert str(folder) in line and "hydra.sweep.dir=<folder>" in line


def test_a_report_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store.jsonl"
    store.write_text("")
    out = _not_a_folder(tmp_path)
    proc = run_entry_point("mtl_robust.report", ["--store", str(store), "--out", str(out)], tmp_path)
    assert proc.returncode == 1
    assert any(
        line.startswith("error: cannot write the report to") and str(out) in line
        for line in proc.stderr.splitlines()
    ), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator:
    """Makes a folder read-only for root too (a read-only bind mount), where the machine allows it."""
    mounted: list[Path] = []

    def _make(folder: Path) -> None:
        for cmd in (
            ["mount", "--bind", str(folder), str(folder)],
            ["mount", "-o", "remount,ro,bind", str(folder)],
        ):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                if cmd[1] == "-o":
                    subprocess.run(["umount", str(folder)], capture_output=True)
                pytest.skip(f"cannot make a read-only folder here: {done.stderr.strip()}")
        mounted.append(folder)
        probe = folder / "probe"
        with pytest.raises(OSError):
            probe.write_text("")

    yield _make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_finished_pipeline_reruns_on_a_read_only_logs_folder(tmp_path: Path, read_only) -> None:
    first = run_entry_point("mtl_robust.pipeline", QUICK, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    read_only(tmp_path / "logs")
    # Hydra's own folder must go elsewhere (the one-line error says so); the checkpoint and the cells are
    # read without claims, and the table is the same.
    refused = run_entry_point("mtl_robust.pipeline", QUICK, tmp_path)
    assert refused.returncode == 1 and "hydra.run.dir=<folder>" in _one_error_line(refused.stderr)
    again = run_entry_point("mtl_robust.pipeline", [*QUICK, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    table = [line for line in first.stdout.splitlines() if line.startswith("pgd ")]
    assert len(table) == 5 and table == [
        line for line in again.stdout.splitlines() if line.startswith("pgd ")
    ]
    assert "already in the store" in again.stderr
