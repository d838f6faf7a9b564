"""Results store: one JSON line per evaluated cell, keyed by a hash of the cell's resolved config.

Appends take an exclusive file lock and write one line with one `write` call followed by fsync, so parallel
jobs never interleave and a crash can at worst leave a truncated last line, which readers skip. A sweep
that restarts asks `done(key)` and skips finished cells; failed cells are recorded but retried.
The rows' fields are described in docs/results_schema.md.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


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


class ResultsStore:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._iter_rows())

    def _iter_rows(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that cell simply counts as not done
                if isinstance(row, dict) and "key" in row:
                    yield row

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last row written for each key."""
        return {row["key"]: row for row in self._iter_rows()}

    def done(self, key: str) -> bool:
        row = self.latest().get(key)
        return row is not None and row.get("status") == "ok"

    def append(
        self,
        key: str,
        config: Mapping[str, Any],
        results: Mapping[str, Any],
        status: str = "ok",
        error: str | None = None,
    ) -> dict[str, Any]:
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

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Flatten the latest row of every cell (config.* and results.* columns) into a CSV file."""
        rows = []
        for row in self.latest().values():
            flat = {"key": row["key"], "status": row.get("status"), "error": row.get("error", "")}
            flat.update({f"config.{k}": v for k, v in _flatten(row.get("config", {})).items()})
            flat.update({f"results.{k}": v for k, v in _flatten(row.get("results", {})).items()})
            rows.append(flat)
        columns = sorted({c for r in rows for c in r}, key=lambda c: (c.split(".")[0] != "key", c))
        out = Path(path)
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{name}."))
        else:
            out[name] = v
    return out
