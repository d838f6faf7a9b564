"""How a job ends, as a user sees it: one error line for a single run, and a verdict for a whole multirun.

A single run that raises ends with `error: <message>` and exit status 1; the traceback is shown only with
`HYDRA_FULL_ERROR=1`, Hydra's own convention. In a multirun every job leaves a marker (`ok` or `failed`) in
`<sweep dir>/.jobs/`, from whichever process or machine ran it; when the sweep ends, `JobFailureSummary`
prints one line counting the failed jobs and the entry point exits with status 1 (configurable with
`hydra.callbacks.job_failures.exit_status=0`) so that scripts and CI notice.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mtl_robust.files import atomic_write_text

log = logging.getLogger(__name__)

MARKER_DIR = ".jobs"

# Set in the launching process by JobFailureSummary when a sweep ends; read by exit_with_sweep_status.
_sweep_exit_status = 0


def full_error_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line_error(err: BaseException) -> SystemExit:
    """The SystemExit a single run ends with: the message alone (type name where it adds information)."""
    message = str(err) or type(err).__name__
    if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line is the error
        message = [line for line in message.splitlines() if line.strip()][-1]
    if not isinstance(err, OSError | ValueError | KeyError) or not str(err):
        message = f"{type(err).__name__}: {message}"
    return SystemExit(f"error: {message}\n(set HYDRA_FULL_ERROR=1 for the full traceback)")


def _job_marker(status: str) -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir) / MARKER_DIR / f"{hc.job.num}.{status}"


def mark_job(status: str, detail: str = "") -> None:
    """Record that this multirun job ended `ok` or `failed` (detail: its overrides and error)."""
    marker = _job_marker(status)
    if marker is not None:
        atomic_write_text(marker, detail)


class JobFailureSummary(Callback):
    """After a multirun: one summary line, and a non-zero exit status when jobs failed."""

    def __init__(self, exit_status: int = 1) -> None:
        self.exit_status = int(exit_status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _sweep_exit_status
        folder = Path(config.hydra.sweep.dir) / MARKER_DIR
        failed = sorted(folder.glob("*.failed"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        total = len(failed) + len(list(folder.glob("*.ok")))
        if not failed:
            print(f"multirun: all {total} jobs succeeded", file=sys.stderr)
            return
        first = failed[0].read_text(encoding="utf-8").strip().splitlines()
        print(
            f"multirun: {len(failed)} of {total} jobs failed (job {', '.join(p.stem for p in failed)}); "
            f"first: {' | '.join(first[:2])}; markers in {folder}",
            file=sys.stderr,
        )
        _sweep_exit_status = self.exit_status


def exit_with_sweep_status(hydra_main: Callable[[], Any]) -> None:
    """Run a `@hydra.main` function; exit non-zero when the multirun it ran had failed jobs."""
    hydra_main()
    if _sweep_exit_status:
        sys.exit(_sweep_exit_status)
