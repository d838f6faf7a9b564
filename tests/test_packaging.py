"""A normal (non-editable) install works: the wheel carries the configs and the console scripts run."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def run(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_wheel_installs_with_configs_and_console_scripts_run(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, REPO_ROOT],
        REPO_ROOT,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("mtl_robust-*.whl")

    # A fresh venv without the checkout on its path; the dependencies come from this interpreter's
    # site-packages (offline and fast), mtl_robust only from the wheel.
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path).returncode == 0
    python = venv / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    Path(purelib.stdout.strip(), "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
        tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MTL_ROBUST_ROOT=str(tmp_path / "work"), WANDB_MODE="disabled")
    where = run([python, "-c", "import mtl_robust; print(mtl_robust.__file__)"], tmp_path, env)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    job = run([venv / "bin" / "mtl-pipeline", "--cfg", "job", "attack.pixel_eps=4"], tmp_path, env)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "pixel_eps: 4" in job.stdout and "directions:" in job.stdout

    trained = run([venv / "bin" / "mtl-train", "experiment=smoke", "trainer.max_steps=2"], tmp_path, env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "checkpoint:" in trained.stdout and list((tmp_path / "work" / "logs").rglob("last.ckpt"))
