"""The sweep launchers the configs offer (`launcher=joblib|submitit_local|slurm`) are Hydra plugins that a
plain install lacks: checked before Hydra composes anything, so a missing one is one line naming the install
instead of Hydra's `Could not find 'hydra/launcher/joblib'`."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

INSTALL = 'pip install -e ".[sweep]"'

# Hydra's launcher name -> (the plugin's package under hydra_plugins, its distribution on PyPI)
PLUGINS = {
    "joblib": ("hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_submitit_launcher", "hydra-submitit-launcher"),
}
# this project's `launcher=<option>` -> the Hydra launcher its yaml selects (conf/launcher/<option>.yaml)
OPTIONS = {"joblib": "joblib", "submitit_local": "submitit_local", "slurm": "submitit_slurm"}


def requested_launcher(argv: Sequence[str]) -> tuple[str, str] | None:
    """(the override as typed, Hydra's launcher name) of `launcher=X` or `hydra/launcher=X` in argv."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep:
            continue
        if key == "launcher" and value in OPTIONS:
            return arg, OPTIONS[value]
        if key == "hydra/launcher" and value in PLUGINS:
            return arg, value
    return None


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(f"hydra_plugins.{package}") is not None
    except (ImportError, ValueError):
        return False


def missing_launcher_message(argv: Sequence[str]) -> str | None:
    """The one-line error for a launcher whose plugin is not installed; None when there is nothing to say."""
    requested = requested_launcher(argv)
    if requested is None:
        return None
    override, launcher = requested
    package, distribution = PLUGINS[launcher]
    if _installed(package):
        return None
    return (
        f"error: {override} needs Hydra's {launcher} launcher plugin ({distribution}), not installed: "
        f"{INSTALL} (or pip install {distribution})"
    )
