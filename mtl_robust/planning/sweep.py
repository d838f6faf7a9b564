"""Expand pipeline overrides (with `-m`) into the jobs Hydra's basic sweeper would launch, without running."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict

from mtl_robust.config_location import CONFIG_DIR

MULTIRUN_FLAGS = ("-m", "--multirun")


def split_multirun(args: Sequence[str]) -> tuple[bool, list[str]]:
    """(multirun?, the overrides without the flag)."""
    return any(a in MULTIRUN_FLAGS for a in args), [a for a in args if a not in MULTIRUN_FLAGS]


def compose_job(overrides: Sequence[str], config_name: str = "pipeline") -> DictConfig:
    """The resolved config of one job, as the pipeline would see it (hydra keys included)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


class JobComposer:
    """The configs of a sweep's jobs, as `compose_job` gives them, in a fraction of the time: Hydra builds
    the defaults tree once per distinct choice of config groups (a paper study's dozens of jobs share two
    or three), and each job's plain value overrides are then applied to a copy, as Hydra itself applies
    them after merging the defaults. An override that turns out to be a group, or any value Hydra would
    refuse, falls back to a full composition, so the result is never other than Hydra's."""

    def __init__(self, config_name: str = "pipeline") -> None:
        self.config_name = config_name
        self._parser = OverridesParser.create()
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._groups: set[str] = set()

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        parsed = self._parser.parse_overrides(list(overrides))
        groups = [o for o in parsed if self._is_group(o)]
        values = [o for o in parsed if not self._is_group(o)]
        key = tuple(o.input_line for o in groups)
        if key not in self._bases:
            base = compose_job(list(key), self.config_name)
            self._groups.update(str(g).split("@", 1)[0] for g in base.hydra.runtime.choices)
            self._bases[key] = base
            if any(self._is_group(o) for o in values):  # learnt a group only now: compose this job whole
                return compose_job(overrides, self.config_name)
        cfg = copy.deepcopy(self._bases[key])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except ConfigCompositionException:
            return compose_job(overrides, self.config_name)  # Hydra's own error, or a group after all
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in parsed if not o.is_hydra_override()]
            cfg.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
        return cfg

    def _is_group(self, override: Override) -> bool:
        name = override.key_or_group
        return (
            override.package is not None
            or name in self._groups
            or name.startswith("hydra/")
            or (CONFIG_DIR / name).is_dir()
        )


def expand_jobs(
    args: Sequence[str], config_name: str = "pipeline", composer: JobComposer | None = None
) -> list[list[str]]:
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
    base = composer(first) if composer is not None else compose_job(first, config_name)
    given = {o.key_or_group for o in parsed}
    given_params = base.hydra.sweeper.get("params")
    params = OmegaConf.to_container(given_params, resolve=False) if given_params else {}
    from_config = [f"{k}={v}" for k, v in params.items() if k not in given]
    combined = parser.parse_overrides([*from_config, *overrides])
    return [list(job) for batch in BasicSweeper.split_arguments(combined, None) for job in batch]
