"""Compare two results stores for bit-identical rows, ignoring what legitimately differs between runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mtl_robust.evaluation.per_image import load_stats
from mtl_robust.evaluation.store import ResultsStore

# Wall-clock times and where files were written: they differ between runs of the same computation.
VOLATILE_RESULTS = ("seconds", "example")
VOLATILE_CONFIG = ("checkpoint",)


def comparable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row without its timings and paths (per-image file names are content keys, so they stay)."""
    config = {k: v for k, v in row.get("config", {}).items() if k not in VOLATILE_CONFIG}
    cost = (config.get("training") or {}).get("cost")
    if cost:  # training wall-clock times
        config["training"] = {
            **config["training"],
            "cost": {k: v for k, v in cost.items() if "seconds" not in k},
        }
    results = {k: v for k, v in row.get("results", {}).items() if k not in VOLATILE_RESULTS}
    return {"key": row["key"], "status": row.get("status"), "config": config, "results": results}


def compare_stores(a: str | Path, b: str | Path) -> list[str]:
    """Differences between two stores' latest rows and their per-image files; empty when bit-identical."""
    rows_a, rows_b = ResultsStore(a).latest(), ResultsStore(b).latest()
    problems = []
    if set(rows_a) != set(rows_b):
        problems.append(f"row keys differ: {sorted(set(rows_a) ^ set(rows_b))}")
    for key in sorted(set(rows_a) & set(rows_b)):
        ra, rb = comparable_row(rows_a[key]), comparable_row(rows_b[key])
        if json.dumps(ra, sort_keys=True) != json.dumps(rb, sort_keys=True):
            problems.append(f"row {key} differs: {_first_difference(ra, rb)}")
            continue
        for side, rel in (ra["results"].get("per_image") or {}).items():
            if side == "format":
                continue
            stats_a, _ = load_stats(Path(a).parent / rel)
            stats_b, _ = load_stats(Path(b).parent / rb["results"]["per_image"][side])
            for task, states in stats_a.items():
                for name, value in states.items():
                    if not np.array_equal(value, stats_b[task][name]):
                        problems.append(f"row {key}: per-image {side} {task}/{name} differs")
    return problems


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    return f"{path}: {a!r} != {b!r}"
