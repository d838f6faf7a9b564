"""Shared fixtures: wandb never blocks, Hydra configs composed the way the entry points compose them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="wandb-tests-"))
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import mtl_robust  # noqa: E402, F401 - registers the resolvers the configs use (e.g. budget_default)
from mtl_robust.cpu_kernels import pin_instruction_set  # noqa: E402

# The kernels the entry points pin, before torch loads: in-process tests then train and attack with what the
# jobs they start as subprocesses use (the same checkpoint keys, and numbers that hold on any x86 CPU; a
# batch-of-3 vs batch-of-1 comparison is exact only when oneDNN and MKL do not pick AVX-512 paths per size).
pin_instruction_set()

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def compose_config(config_name: str, overrides: list[str], output_dir: Path):
    """Compose a primary config with Hydra's own runtime config, as `@hydra.main` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose(tmp_path: Path) -> Iterator:
    def _compose(overrides: list[str] | None = None, config_name: str = "train"):
        return compose_config(config_name, list(overrides or []), tmp_path)

    yield _compose
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


def run_entry_point(module: str, args: list[str], root: Path, timeout: int = 600):
    """Run `python -m <module> <args>` as a user would, with logs and data under `root`."""
    import os
    import subprocess
    import sys

    # the repository first; a test may add its own modules through PYTHONPATH (e.g. a contributed direction)
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "MTL_ROBUST_ROOT": str(root), "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def shared_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One checkpoint cache for the study smoke tests, as one user's `logs/checkpoints` serves all studies:
    a model whose training key another study already trained is loaded, not trained again."""
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture
def study_root(tmp_path: Path, shared_checkpoints: Path) -> Path:
    """A fresh root for one study run (its own results, reports, multirun folders) over the shared cache."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "checkpoints").symlink_to(shared_checkpoints, target_is_directory=True)
    return tmp_path
