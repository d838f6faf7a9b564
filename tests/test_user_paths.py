"""What a user meets first, through the user's commands: launchers that name their install, sizes and seeds
refused before any work, a first run that says what it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_bad_sizes_and_seeds_fail_each_job_of_a_sweep_in_one_line_before_training(tmp_path: Path) -> None:
    from tests.conftest import run_entry_point

    proc = run_entry_point(
        "mtl_robust.pipeline", ["-m", "experiment=smoke", "eval.max_batches=0,1", "seed=-1"], tmp_path
    )
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr  # Hydra's job log goes to stdout
    assert "Traceback" not in output, output[-3000:]
    failed = [line for line in output.splitlines() if "job failed" in line]
    assert len(failed) == 2, output[-3000:]
    assert "eval.max_batches must be a positive int" in failed[0]
    assert "seed must be a non-negative int, got -1" in failed[1]
    assert "multirun: 2 of 2 jobs failed" in proc.stderr
    assert not list((tmp_path / "logs").rglob("*.ckpt")), "refused before training"


def test_sizes_and_seeds_are_checked(compose) -> None:
    from mtl_robust.jobs.attack import check_sizes_and_seed

    check_sizes_and_seed(compose(["eval.batch_size=8", "eval.max_batches=2", "seed=0"], "attack"))
    check_sizes_and_seed(compose([], "attack"))  # the defaults: null sizes
    for override, message in [
        ("eval.batch_size=0", "eval.batch_size must be a positive int"),
        ("eval.batch_size=-3", "eval.batch_size must be a positive int"),
        ("eval.max_batches=0", "eval.max_batches must be a positive int"),
        ("seed=-1", "seed must be a non-negative int"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_sizes_and_seed(compose([override], "attack"))


def test_an_attack_on_other_images_than_the_checkpoints_says_how_to_match(compose) -> None:
    from types import SimpleNamespace

    from mtl_robust.jobs.attack import other_images

    trained = {"height": 32, "width": 32, "num_images": {"val": 16, "test": 16}, "experiment": "smoke"}
    module = SimpleNamespace(hparams={"meta": {"images": trained}})
    message = other_images(module, compose([], "attack"), "val")
    assert message is not None
    assert "64x64 images instead of 32x32" in message and "256 val images instead of 16" in message
    assert "experiment=smoke" in message and "data.dataset.height=32" in message
    assert other_images(module, compose(["experiment=smoke"], "attack"), "val") is None
    assert other_images(SimpleNamespace(hparams={"meta": {}}), compose([], "attack"), "val") is None  # old


def test_flags_print_under_the_table() -> None:
    from mtl_robust.jobs.terminal_flags import flag_lines

    def row(miou: float, flags: list[str]) -> dict:
        baseline = {"seg": {"metrics": {"miou": 0.2}, "higher_is_better": {"miou": True}}}
        results = {
            "clean": {"seg": {"miou": miou}},
            "trivial_baseline": baseline,
            "diagnostics": {"flags": flags},
        }
        return {"status": "ok", "config": {}, "results": results}

    assert flag_lines([row(0.5, [])]) == []
    lines = flag_lines([row(0.2, []), row(0.2, [])])
    assert lines[0].startswith("⚠ a pipeline check only") and "undertrained on seg" in lines[1]
    (line,) = flag_lines([row(0.5, ["zero_input_gradients:seg"])])
    assert "zero_input_gradients:seg" in line and "overstate robustness" in line
