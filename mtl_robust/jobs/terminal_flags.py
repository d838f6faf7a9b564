"""The flags of the evaluated model, printed by the attack and pipeline jobs under their table: the report's
own rules (`report/flags.py`: undertrained against the trivial predictor, the stored diagnostics), so that
a first run's numbers come with the same warning the report would give them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtl_robust.report.flags import FLAG_MARK, UNDERTRAINED, model_flags
from mtl_robust.report.records import Record


def row_record(row: Mapping[str, Any]) -> Record:
    """A row the job just wrote, read as the report reads a store's rows."""
    return Record(
        store="",
        key=str(row.get("key", "")),
        status=str(row.get("status", "")),
        time=float(row.get("time", 0.0) or 0.0),
        config=row.get("config") or {},
        results=row.get("results") or {},
        error=str(row.get("error", "")),
        base_dir=Path("."),
    )


def flag_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What to print under the table: one line per kind of flag the model tripped (none when all clear)."""
    flags = list(
        dict.fromkeys(f for row in rows if row.get("status") == "ok" for f in model_flags(row_record(row)))
    )
    # in the model's task order, whatever order the flags were found in (a rerun prints the same lines)
    task_order = list(dict.fromkeys(t for row in rows for t in (row.get("config") or {}).get("tasks") or []))
    undertrained = sorted(
        (f.split(":", 1)[1] for f in flags if f.startswith(f"{UNDERTRAINED}:")),
        key=lambda t: (task_order.index(t) if t in task_order else len(task_order), t),
    )
    others = sorted(f for f in flags if not f.startswith(f"{UNDERTRAINED}:"))
    lines = []
    tasks = {t for row in rows for t in (row.get("results") or {}).get("trivial_baseline") or {}}
    if tasks and tasks <= set(undertrained):
        lines.append(
            f"{FLAG_MARK} a pipeline check only, no conclusions: the model learned (almost) nothing on any "
            "task (as experiment=smoke, which trains for seconds; the default pipeline, without it, trains a "
            "model worth attacking)"
        )
    if undertrained:
        lines.append(
            f"{FLAG_MARK} undertrained on {', '.join(undertrained)}: the model is not clearly better than a "
            "constant prediction (the training set's class frequencies / mean target) there, so its relative "
            "changes say little; train longer (train.max_epochs) or on more images"
        )
    if others:
        lines.append(
            f"{FLAG_MARK} {', '.join(others)}: gradient-masking or sanity checks failed, the attacks may "
            "overstate robustness (docs/adaptive_attacks.md)"
        )
    return lines
