"""Hydra callbacks: a study's multirun ends by writing its report."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportOnMultirunEnd(Callback):
    """After the last job of a sweep, read the results store and write tables and plots."""

    def __init__(self, store: str, out: str, extra_args: list[str] | None = None) -> None:
        self.store, self.out, self.extra_args = store, out, list(extra_args or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mtl_robust.jobs.report import main as report_main

        log.info("writing the study report from %s to %s", self.store, self.out)
        report_main(["--store", self.store, "--out", self.out, *self.extra_args])
