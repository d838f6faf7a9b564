"""Diagnostics flags of a results row, and the mark every report table puts on a flagged model."""

from __future__ import annotations

from mtl_robust.report.records import Record

FLAG_MARK = "⚠"


def model_flags(record: Record) -> list[str]:
    """The diagnostics flags of the model a row belongs to (empty when not diagnosed or all clear)."""
    diagnostics = record.results.get("diagnostics") or {}
    return [str(f) for f in diagnostics.get("flags") or []]


def marked_layout(record: Record) -> str:
    """The layout name, marked when the model tripped a diagnostics flag (its numbers may overstate
    robustness)."""
    return f"{record.layout_name} {FLAG_MARK}" if model_flags(record) else record.layout_name
