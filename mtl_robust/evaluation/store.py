"""Results store: one JSON line per evaluated cell, keyed by a hash of the cell's resolved config.

Appends take an exclusive file lock and write one line with one `write` call followed by fsync, so parallel
jobs never interleave and a crash can at worst leave a truncated last line, which readers skip. A sweep
that restarts reads `latest()` and skips cells whose row is `ok`; failed cells are recorded but retried.
The rows' fields are described in docs/results_schema.md.

Reading never crashes on a damaged store: lines that are not UTF-8, not JSON or not a row (key not a string,
config or results not a mapping, ...) are skipped and counted in one warning per read that names the first
bad line. An `ok` row supersedes every `failed` row of its key, whatever their order, and a `resolved` row
withdraws a job-level failure (a job whose retry succeeded), so counts, reports and resume agree.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Row statuses: a computed cell, a cell (or whole job) that raised, and a job-level failure withdrawn
# because a later run of the same job succeeded.
STATUSES = ("ok", "failed", "resolved")


def config_key(config: Mapping[str, Any]) -> str:
    """Stable hash of a JSON-able config: independent of key order."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# (store, unreadable lines, first one) already warned about in this process
_WARNED: set[tuple[str, int, int]] = set()


class ResultsStore:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._iter_rows())

    def _iter_rows(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        bad, first_bad = 0, 0
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                row = _parse_row(raw)
                if row is None:
                    bad += 1
                    first_bad = first_bad or number
                    continue
                yield row
        event = (str(self.path.resolve()), bad, first_bad)
        if bad and event not in _WARNED:  # a job reads its store several times: one warning per event
            _WARNED.add(event)
            log.warning(
                "results store %s: skipped %d unreadable line%s (first: line %d); they count as not done",
                self.path,
                bad,
                "" if bad == 1 else "s",
                first_bad,
            )

    def latest(self) -> dict[str, dict[str, Any]]:
        """The row that stands for each key: its last `ok` row, else its last row; `resolved` keys dropped."""
        chosen: dict[str, dict[str, Any]] = {}
        for row in self._iter_rows():
            previous = chosen.get(row["key"])
            if previous is not None and previous["status"] == "ok" and row["status"] == "failed":
                continue  # a cell once computed stays computed; a later failed retry does not hide it
            chosen[row["key"]] = row
        return {key: row for key, row in chosen.items() if row["status"] != "resolved"}

    def append(
        self,
        key: str,
        config: Mapping[str, Any],
        results: Mapping[str, Any],
        status: str = "ok",
        error: str | None = None,
    ) -> dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"row status must be one of {STATUSES}, got {status!r}")
        row = {
            "key": key,
            "status": status,
            "time": time.time(),
            "config": dict(config),
            "results": dict(results),
        }
        if error is not None:
            row["error"] = error
        line = json.dumps(_jsonable(row), sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0 and not self._ends_with_newline():
                    fh.write("\n")  # never glue a new row onto a truncated one
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return row

    def resolve_failure(self, key: str, config: Mapping[str, Any]) -> bool:
        """Withdraw the failed row of `key` (its job has now succeeded); True if there was one."""
        row = self.latest().get(key)
        if row is None or row["status"] != "failed":
            return False
        self.append(key, config, {}, status="resolved")
        return True

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"


def _parse_row(raw: bytes) -> dict[str, Any] | None:
    """One store line as a row, or None when it is not one (undecodable, not JSON, wrong field types)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(row, dict) or not isinstance(row.get("key"), str) or not row["key"]:
        return None
    if row.get("status") not in STATUSES or not isinstance(row.get("config"), Mapping):
        return None
    if not isinstance(row.get("results", {}), Mapping):
        return None
    if row["status"] == "ok" and not isinstance(row.get("results"), Mapping):
        return None
    return row
