"""How a job ends, as a user sees it: one error line for a single run, and a verdict for a whole multirun.

A single run that raises ends with `error: <message>` and exit status 1; the traceback is shown only with
`HYDRA_FULL_ERROR=1`, Hydra's own convention. A job that ran to its end but had failed cells prints its
tables, then ends the same way (`error: 1 of 5 cells failed ...`): the cells' rows say why, and a rerun
retries them. In a multirun every job leaves a marker (`ok`, `failed`, or `cells-failed` when it finished
with failed cells) in `<sweep dir>/.jobs/`, from whichever process or machine ran it; when the sweep ends,
`JobFailureSummary` prints one line counting the failed jobs and the failed cells and the entry point exits
with status 1 (configurable with `hydra.callbacks.job_failures.exit_status=0`) so that scripts and CI notice.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mtl_robust.files import atomic_write_text

log = logging.getLogger(__name__)

MARKER_DIR = ".jobs"
CELLS_FAILED = "cells-failed"

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


class FailedCells(Exception):
    """A job ran to its end, but some of its cells failed; `result` is what the job returns otherwise."""

    def __init__(self, failed: int, total: int, first: str, where: str, result: Any = None) -> None:
        self.failed, self.total, self.result = failed, total, result
        super().__init__(
            f"{failed} of {total} cells failed (first: {first}); their rows in {where} say why, "
            "and running the command again retries them"
        )


def check_cells(rows: Sequence[Mapping[str, Any]], store: str, result: Any = None) -> None:
    """Raise `FailedCells` when any row of the job is not ok (after the job printed its tables)."""
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        config = failed[0].get("config", {})
        error = (failed[0].get("error") or "").strip().splitlines()
        first = f"{config.get('method', '?')} {config.get('direction', '?')}: {error[0] if error else '?'}"
        raise FailedCells(len(failed), len(rows), first, store, result)


def _job_number(marker: Path) -> int:
    stem = marker.name.split(".")[0]
    return int(stem) if stem.isdigit() else -1


def sweep_verdict(folder: Path) -> tuple[str, bool]:
    """The summary line of a finished sweep from its job markers, and whether anything failed."""
    failed = sorted(folder.glob("*.failed"), key=_job_number)
    partial = sorted(folder.glob(f"*.{CELLS_FAILED}"), key=_job_number)
    total = len(failed) + len(partial) + len(list(folder.glob("*.ok")))
    if not failed and not partial:
        return f"multirun: all {total} jobs succeeded", False
    parts = []
    if failed:
        parts.append(
            f"{len(failed)} of {total} jobs failed (job {', '.join(str(_job_number(p)) for p in failed)})"
        )
    if partial:
        # The first line of a cells-failed marker is "<failed> of <cells> cells failed ...".
        counts = [int(p.read_text(encoding="utf-8").split(" ", 1)[0] or 0) for p in partial]
        jobs = ", ".join(str(_job_number(p)) for p in partial)
        cells = f"{sum(counts)} cell{'s' if sum(counts) != 1 else ''}"
        parts.append(f"{cells} failed in {len(partial)} of {total} jobs (job {jobs})")
    first = (failed or partial)[0].read_text(encoding="utf-8").strip().splitlines()
    return f"multirun: {'; '.join(parts)}; first: {' | '.join(first[:2])}; markers in {folder}", True


def fail_sweep(message: str, exit_status: int = 1) -> None:
    """Something the launching process did after the jobs (e.g. the study's report) failed: one line on
    stderr, and the entry point exits non-zero (Hydra turns a callback's exception into a mere warning)."""
    global _sweep_exit_status
    first = next((line for line in message.splitlines() if line.strip()), message)
    print(f"error: {first}", file=sys.stderr, flush=True)
    _sweep_exit_status = _sweep_exit_status or exit_status


class JobFailureSummary(Callback):
    """After a multirun: one summary line, and a non-zero exit status when jobs or cells failed."""

    def __init__(self, exit_status: int = 1) -> None:
        self.exit_status = int(exit_status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _sweep_exit_status
        line, any_failed = sweep_verdict(Path(config.hydra.sweep.dir) / MARKER_DIR)
        print(line, file=sys.stderr)
        if any_failed:
            _sweep_exit_status = self.exit_status


def exit_with_sweep_status(hydra_main: Callable[[], Any]) -> None:
    """Run a `@hydra.main` function; exit non-zero when the multirun it ran had failed jobs. A launcher whose
    plugin is not installed is refused first, in one line."""
    from mtl_robust.jobs.launchers import missing_launcher_message

    message = missing_launcher_message(sys.argv[1:])
    if message:
        raise SystemExit(message)
    hydra_main()
    if _sweep_exit_status:
        sys.exit(_sweep_exit_status)
