"""Results stores as pandas DataFrames (notebook access): one row per cell, flattened config and metrics.

    from mtl_robust.evaluation.frame import load_frame
    df = load_frame("logs/results/directions_smoke.jsonl")
    df.groupby(["layout_name", "direction", "eps"])["rel_avg"].agg(["mean", "std"])

Columns: `key`, `status`, `store`, every config field under its own name (`method`, `direction`, `eps`,
`seed`, `layout_name`, ...), the results flattened with dots (`rel_avg`, `rel_task.seg`, `clean.seg.miou`,
`adv.normal.mean_angle`, ...), and `per_image_clean` / `per_image_adv`: absolute paths of the cell's
per-image statistics files (None for rows written before they existed). `load_cell_stats` reads them.
pandas is an optional dependency: `pip install mtl_robust[analysis]`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtl_robust.evaluation.per_image import Stats, load_stats
from mtl_robust.evaluation.store import ResultsStore

# Result fields that are bulky or not per-cell numbers: kept out of the flat columns.
SKIPPED_RESULTS = ("per_image", "higher_is_better")


def _pandas():
    try:
        import pandas
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("load_frame needs pandas: pip install 'mtl_robust[analysis]'") from err
    return pandas


def flat_row(row: Mapping[str, Any], store: Path) -> dict[str, Any]:
    """One store row as a flat dict (see the module doc for the columns)."""
    out: dict[str, Any] = {"key": row["key"], "status": row.get("status"), "store": str(store)}
    for name, value in row.get("config", {}).items():
        out[name] = tuple(value) if isinstance(value, list) else value
    results = row.get("results") or {}
    _flatten({k: v for k, v in results.items() if k not in SKIPPED_RESULTS}, "", out)
    side = results.get("per_image") or {}
    for part in ("clean", "adv"):
        out[f"per_image_{part}"] = str(store.parent / side[part]) if side.get(part) else None
    if row.get("error"):
        out["error"] = row["error"]
    return out


def _flatten(values: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for name, value in values.items():
        if isinstance(value, Mapping):
            _flatten(value, f"{prefix}{name}.", out)
        else:
            out[f"{prefix}{name}"] = value


def load_frame(stores: str | os.PathLike | Sequence[str | os.PathLike], include_failed: bool = False):
    """The latest row of every cell of one or more stores as a DataFrame (failed rows only on request)."""
    pandas = _pandas()
    paths = [stores] if isinstance(stores, str | os.PathLike) else list(stores)
    rows = []
    for path in paths:
        store = Path(path)
        if not store.is_file():
            raise FileNotFoundError(f"results store {store} not found")
        for row in ResultsStore(store).latest().values():
            if include_failed or row.get("status") == "ok":
                rows.append(flat_row(row, store.resolve()))
    return pandas.DataFrame(rows)


def load_cell_stats(frame_row: Mapping[str, Any]) -> tuple[Stats, Stats]:
    """(clean, adversarial) per-image statistics of one DataFrame row; PerImageError names a bad file."""
    if not frame_row.get("per_image_clean") or not frame_row.get("per_image_adv"):
        raise ValueError(
            f"cell {frame_row.get('key')} has no per-image statistics (written before they existed)"
        )
    clean, _ = load_stats(frame_row["per_image_clean"])
    adv, _ = load_stats(frame_row["per_image_adv"])
    return clean, adv
