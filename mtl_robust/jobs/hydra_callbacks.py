"""Hydra callbacks: a multirun's progress (one line per finished job) and a study's report at its end."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mtl_robust.evaluation.progress import format_seconds
from mtl_robust.files import atomic_write_text
from mtl_robust.jobs.failures import MARKER_DIR, fail_sweep, full_error_requested
from mtl_robust.jobs.report_wandb import is_wandb, log_report

log = logging.getLogger(__name__)


class ReportOnMultirunEnd(Callback):
    """After the last job of a sweep, read the results store and write tables and plots; with
    `logger=wandb` the report is also one wandb run of job type `report` in the study's group."""

    def __init__(self, store: str, out: str, extra_args: list[str] | None = None) -> None:
        self.store, self.out, self.extra_args = store, out, list(extra_args or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mtl_robust.jobs.report import main as report_main

        log.info("writing the study report from %s to %s", self.store, self.out)
        step = "writing the study report"
        try:
            report_main(["--store", self.store, "--out", self.out, *self.extra_args])
            if is_wandb(config.get("logger")):
                step = "logging the study report to wandb"
                logged = log_report(config.logger, str(config.get("study", "default")), Path(self.out))
                log.info("report logged to wandb: %s", logged)
        except SystemExit as err:  # the report command's own one-line error
            fail_sweep(f"{step} ({self.out}): {str(err.code).removeprefix('error: ')}")
        except Exception as err:
            if full_error_requested():
                raise
            fail_sweep(f"{step} ({self.out}): {type(err).__name__}: {err}")


class OutputFolderCheck(Callback):
    """Before Hydra creates the run's (or sweep's) folder: one line naming the folder and the way out when
    it cannot be written (read-only `logs/`, a full disk), instead of Hydra's traceback. A finished study
    on a read-only store still prints its tables once Hydra's folder is elsewhere."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")


def _check_writable(folder: Path, setting: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        # SystemExit, not an exception: Hydra turns a callback's exception into a warning and goes on
        raise SystemExit(
            f"error: cannot create Hydra's output folder {folder}: {err.strerror or err}; write it elsewhere "
            f"with {setting}=<folder> (or move every output with paths.log_dir=<folder>)"
        ) from err


SWEEP_FILE = "sweep"  # in the marker folder: "<number of jobs> <start time (epoch seconds)>"


def sweep_size(config: DictConfig) -> int | None:
    """How many jobs the basic sweeper launches: the product of the discrete sweeps in the sweeper's params
    and the command line (the command line wins for a key in both); None for other sweeps (ranges of
    an optimiser, intervals), whose length the sweeper decides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = {str(k): f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()}
    for text in config.hydra.overrides.task:
        given[text.split("=", 1)[0].lstrip("+~")] = text
    size = 1
    for override in OverridesParser.create().parse_overrides(list(given.values())):
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                return None
            size *= len(list(override.sweep_string_iterator()))
    return size


class SweepProgress(Callback):
    """After each job of a multirun, on stderr: `multirun: job 3/6 finished (job 2 ok in 41s); elapsed
    2m03s, overall ETA 2m03s`. Jobs may finish in any process or machine: the count is read from the job
    markers (`failures.mark_job`), the size and start time from a file the launching process writes."""

    def __init__(self) -> None:
        self.job_started = time.perf_counter()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        size = sweep_size(config)
        folder = Path(config.hydra.sweep.dir) / MARKER_DIR
        atomic_write_text(folder / SWEEP_FILE, f"{size if size is not None else '?'} {time.time()}")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.job_started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        folder = Path(config.hydra.sweep.dir) / MARKER_DIR
        try:
            size_text, start_text = (folder / SWEEP_FILE).read_text(encoding="utf-8").split()
        except (OSError, ValueError):
            return  # launched without this callback's start (e.g. an older sweep resumed)
        num = config.hydra.job.num
        statuses = [p.name.split(".", 1)[1] for p in folder.glob(f"{num}.*")]
        finished = len([p for p in folder.iterdir() if p.name.split(".")[0].isdigit()])
        elapsed = time.time() - float(start_text)
        size = int(size_text) if size_text.isdigit() else None
        left = size - finished if size is not None else None
        eta = format_seconds(elapsed / finished * left) if left is not None and finished else "?"
        status = statuses[0] if statuses else "ended"
        took = format_seconds(time.perf_counter() - self.job_started)
        print(
            f"multirun: job {finished}/{size_text} finished (job {num} {status} in {took}); "
            f"elapsed {format_seconds(elapsed)}, overall ETA {eta}",
            file=sys.stderr,
            flush=True,
        )
