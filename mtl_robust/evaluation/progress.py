"""Progress a person (or a log file) can read: one plain line per cell with its count and the time left.

Per-batch bars redraw with carriage returns, which turns a redirected log into hundreds of kilobytes of
noise; they are kept for terminals only (`interactive()`), and these lines go to stderr either way, so
stdout keeps the results tables alone.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from mtl_robust.values.budget import format_pixels
from mtl_robust.values.norm import method_label


def interactive(stream: TextIO | None = None) -> bool:
    """Whether `stream` (stderr by default) is a terminal, where redrawn progress bars make sense."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class CellProgress:
    """`[job 2] cell 3/15 pgd dgba eps=8/255: ok, rel avg -97.7% in 2.1s; ETA 25s` on stderr per cell.

    The ETA is the mean time of the cells computed so far times the cells left (reused cells cost nothing).
    """

    def __init__(self, total: int, stream: TextIO | None = None, prefix: str | None = None) -> None:
        self.total, self.done, self.computed_seconds, self.computed_count = total, 0, 0.0, 0
        self.stream = stream
        self.prefix = job_prefix() if prefix is None else prefix
        self.started = time.perf_counter()

    def _emit(self, config: Mapping[str, Any], outcome: str) -> None:
        self.done += 1
        left = self.total - self.done
        mean = self.computed_seconds / self.computed_count if self.computed_count else math.nan
        eta = left * mean if left else 0.0
        eps = config.get("eps")
        eps_text = format_pixels(eps, norm=config.get("norm")) if isinstance(eps, int | float) else "?"
        method = method_label(str(config.get("method", "?")), config.get("norm"))
        line = (
            f"{self.prefix}cell {self.done}/{self.total} {method} "
            f"{config.get('direction', '?')} eps={eps_text}: {outcome}; "
            f"elapsed {format_seconds(time.perf_counter() - self.started)}, ETA {format_seconds(eta)}"
        )
        print(line, file=self.stream or sys.stderr, flush=True)

    def skipped(self, config: Mapping[str, Any]) -> None:
        self._emit(config, "already in the store")

    def computed(self, config: Mapping[str, Any], row: Mapping[str, Any], seconds: float) -> None:
        self.computed_seconds += seconds
        self.computed_count += 1
        if row.get("status") == "ok":
            avg = (row.get("results") or {}).get("rel_avg")
            rel = f", rel avg {100 * avg:.1f}%" if isinstance(avg, int | float) else ""
            outcome = f"ok{rel} in {seconds:.1f}s"
        else:
            outcome = f"FAILED in {seconds:.1f}s"
        self._emit(config, outcome)


def job_prefix() -> str:
    """`[job 3] ` inside a Hydra multirun (which job of the sweep prints), else empty."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            num = HydraConfig.get().job.get("num", None)  # a sweep composed, not launched, has none
            return "" if num is None else f"[job {num}] "
    except (ImportError, ValueError):
        pass
    return ""
