"""Expand pipeline overrides (with `-m`) into the jobs Hydra's basic sweeper would launch, without running."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mtl_robust.config_location import CONFIG_DIR

MULTIRUN_FLAGS = ("-m", "--multirun")


def split_multirun(args: Sequence[str]) -> tuple[bool, list[str]]:
    """(multirun?, the overrides without the flag)."""
    return any(a in MULTIRUN_FLAGS for a in args), [a for a in args if a not in MULTIRUN_FLAGS]


def compose_job(overrides: Sequence[str], config_name: str = "pipeline") -> DictConfig:
    """The resolved config of one job, as the pipeline would see it (hydra keys included)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def expand_jobs(args: Sequence[str], config_name: str = "pipeline") -> list[list[str]]:
    """Every job's override list: one job without `-m`; with it, the cartesian product of the command
    line's comma lists and the config's `hydra.sweeper.params` (the command line wins on a shared key)."""
    multirun, overrides = split_multirun(args)
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    if not multirun:
        if any(o.is_sweep_override() for o in parsed):
            raise ValueError("a comma list sweeps only with -m (or give one value)")
        return [list(overrides)]
    first = [
        o.key_or_group + "=" + str(next(iter(o.sweep_string_iterator())))
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]
    base = compose_job(first, config_name)
    given = {o.key_or_group for o in parsed}
    given_params = base.hydra.sweeper.get("params")
    params = OmegaConf.to_container(given_params, resolve=False) if given_params else {}
    from_config = [f"{k}={v}" for k, v in params.items() if k not in given]
    combined = parser.parse_overrides([*from_config, *overrides])
    return [list(job) for batch in BasicSweeper.split_arguments(combined, None) for job in batch]
