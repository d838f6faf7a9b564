"""What a user meets first, through the user's commands: launchers that name their install, sizes and seeds
refused before any work, a first run that says what it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def _entry_point_without(
    module: str, hidden: str, args: list[str], root: Path
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a process where the package `hidden` cannot be imported (as after an
    install without the extra that brings it)."""
    import os

    code = (
        f"import runpy, sys; sys.modules[{hidden!r}] = None; sys.argv = [{module!r}, *{args!r}]; "
        f"runpy.run_module({module!r}, run_name='__main__')"
    )
    env = {**os.environ, "MTL_ROBUST_ROOT": str(root), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_missing_launcher_plugin_is_one_line_naming_the_install(tmp_path: Path) -> None:
    option, hidden = "launcher=joblib", "hydra_plugins.hydra_joblib_launcher"
    proc = _entry_point_without("mtl_robust.pipeline", hidden, ["-m", "experiment=smoke", option], tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {option} needs") and 'pip install -e ".[sweep]"' in lines[0]
    assert not (tmp_path / "logs").exists(), "refused before any work"


def test_each_launcher_option_knows_its_plugin(monkeypatch) -> None:
    from mtl_robust.jobs import launchers

    assert launchers.missing_launcher_message(["-m", "launcher=joblib"]) is None  # the test extra has it
    assert launchers.missing_launcher_message(["experiment=smoke"]) is None
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    for option in ("launcher=slurm", "launcher=submitit_local", "hydra/launcher=submitit_slurm"):
        message = launchers.missing_launcher_message(["-m", option])
        assert message and "hydra-submitit-launcher" in message and launchers.INSTALL in message, option
    conf = REPO_ROOT / "conf" / "launcher"
    assert {p.stem for p in conf.glob("*.yaml")} == set(launchers.OPTIONS)
    for option, launcher in launchers.OPTIONS.items():
        assert f"override /hydra/launcher: {launcher}" in (conf / f"{option}.yaml").read_text()


def test_the_readme_names_the_extra_where_it_shows_launcher_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for paragraph in readme.split("\n\n"):  # a paragraph or code block showing a command with a launcher
        shows_command = "python -m" in paragraph or "-m launcher=" in paragraph
        if shows_command and ("launcher=joblib" in paragraph or "launcher=slurm" in paragraph):
            assert '".[sweep]"' in paragraph, paragraph
