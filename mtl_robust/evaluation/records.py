"""Results-store rows as typed records, and the value formatting and orderings every report uses.

Real stores are messy: values may be null or NaN, cells may have failed, a cell may have been written
several times (the latest row wins, via `ResultsStore.latest()`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl_robust.attacks.config import parse_budget
from mtl_robust.evaluation.store import ResultsStore

TASK_ORDER = ("seg", "normal", "depth", "keypoints", "edges")
METHOD_ORDER = ("fgsm", "pgd", "mim", "apgd", "apgd_paper")
INDEPENDENT = "independent"
Cell = str | int | float | None


# ------------------------------------------------------------------------------------------------ values
def parse_eps(text: str | float) -> float:
    """`"8/255"` -> 8/255, `"0.03"` -> 0.03; the [0, 1] scale the store uses."""
    value = parse_budget(text, "eps")
    if not math.isfinite(value) or value < 0 or value > 1:
        raise ValueError(f"eps must be in [0, 1] (pixel budgets are written as '8/255'), got {text!r}")
    return value


def format_eps(eps: float) -> str:
    """8/255 -> '8/255'; budgets that are not whole pixel steps keep their decimals ('0.5/255')."""
    if not math.isfinite(eps):
        return "?"
    pixels = eps * 255
    if abs(pixels - round(pixels)) < 1e-4:
        return f"{round(pixels)}/255"
    return f"{pixels:.3g}/255"


def eps_slug(eps: float) -> str:
    return "eps" + format_eps(eps).split("/")[0].replace(".", "p")


def same_eps(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def num(value: Any) -> float:
    """A stored number as float; null, strings and anything else non-numeric become NaN."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)  # "inf" / "-inf" as the store writes them
    except (TypeError, ValueError):
        return math.nan


def pct(value: Any) -> float:
    return 100.0 * num(value)


def format_number(value: float, spec: str = ".2f") -> str:
    """`format()` without the "-0.00" that rounding a tiny negative value gives."""
    text = format(value, spec)
    if text.startswith("-") and not any(c in "123456789" for c in text.split("e")[0]):
        text = text[1:]
    return text


def slug(*parts: str) -> str:
    text = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "table"


def task_sort_key(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task), "") if task in TASK_ORDER else (len(TASK_ORDER), task)


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def defense_sort_key(defense: str) -> tuple[int, str]:
    return (0 if defense == "none" else 1, defense)


def direction_sort_key(direction: str, tasks: Sequence[str] = TASK_ORDER) -> tuple[int, int, str]:
    """single:<task> in task order, then total, dgba, then any other direction by name."""
    if direction.startswith("single:"):
        task = direction.split(":", 1)[1]
        return (0, list(tasks).index(task) if task in tasks else len(tasks), task)
    if direction == "total":
        return (1, 0, "")
    if direction == "dgba":
        return (2, 0, "")
    return (3, 0, direction)


def direction_label(direction: str) -> str:
    if direction.startswith("single:"):
        return f"SINGLE({direction.split(':', 1)[1]})"
    return direction.upper() if direction in ("total", "dgba") else direction


# ----------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Record:
    """The latest row of one cell of one store, with typed access to the config fields the report uses."""

    store: str
    key: str
    status: str
    time: float
    config: Mapping[str, Any]
    results: Mapping[str, Any]
    error: str
    base_dir: Path

    def text(self, name: str, default: str = "?") -> str:
        value = self.config.get(name)
        return default if value is None or value == "" else str(value)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def study(self) -> str:
        return self.text("study")

    @property
    def data(self) -> str:
        return self.text("data")

    @property
    def backbone(self) -> str:
        return self.text("backbone")

    @property
    def defense(self) -> str:
        return self.text("defense", "none")

    @property
    def method(self) -> str:
        return self.text("method")

    @property
    def direction(self) -> str:
        return self.text("direction")

    @property
    def layout_name(self) -> str:
        """The layout's name; layouts given explicitly (name "explicit") are told apart by their structure."""
        name = self.text("layout_name")
        if name in ("explicit", "?") and self.config.get("layout"):
            return str(self.config["layout"])
        return name

    @property
    def eps(self) -> float:
        return num(self.config.get("eps"))

    @property
    def sharing_score(self) -> float:
        return num(self.config.get("sharing_score"))

    @property
    def is_attack(self) -> bool:
        return self.method not in ("none", "?")

    @property
    def tasks(self) -> list[str]:
        tasks = self.config.get("tasks")
        if isinstance(tasks, list) and tasks:
            return [str(t) for t in tasks]
        return list(self.results.get("rel_task") or self.results.get("clean") or {})

    def rel_task(self, task: str) -> float:
        return pct((self.results.get("rel_task") or {}).get(task))

    @property
    def rel_avg(self) -> float:
        return pct(self.results.get("rel_avg"))

    def clean_metrics(self) -> dict[str, dict[str, float]]:
        clean = self.results.get("clean") or {}
        return {t: {m: num(v) for m, v in (ms or {}).items()} for t, ms in clean.items()}


def store_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique names for the stores: the file stem, with the parent folder added where stems clash."""
    stems = [Path(p).stem for p in paths]
    labels = []
    for path, stem in zip(paths, stems):
        label = stem if stems.count(stem) == 1 else f"{Path(path).parent.name}/{stem}"
        labels.append(label)
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return unique


def load_records(paths: Sequence[str | os.PathLike], studies: Sequence[str] | None = None) -> list[Record]:
    """Latest row of every cell of every store; `studies` keeps only rows whose config.study is listed."""
    if not paths:
        raise ValueError("no results store given: pass at least one --store PATH (a .jsonl file)")
    records: list[Record] = []
    for path, label in zip(paths, store_labels(paths)):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"results store {str(p)!r} does not exist or is not a file; pass the .jsonl file written by "
                "the attack evaluation (config `results_store`)"
            )
        for key, row in ResultsStore(p).latest().items():
            config = row.get("config") if isinstance(row.get("config"), Mapping) else {}
            results = row.get("results") if isinstance(row.get("results"), Mapping) else {}
            record = Record(
                store=label,
                key=str(key),
                status=str(row.get("status", "ok")),
                time=num(row.get("time")),
                config=config,
                results=results,
                error=str(row.get("error") or ""),
                base_dir=p.resolve().parent,
            )
            if studies and record.study not in studies:
                continue
            records.append(record)
    return records


@dataclass(frozen=True)
class Sources:
    """Which identity columns a report needs: `store` with several stores, `study` with several studies."""

    show_store: bool
    show_study: bool

    @classmethod
    def of(cls, records: Sequence[Record]) -> Sources:
        return cls(len({r.store for r in records}) > 1, len({r.study for r in records}) > 1)

    @property
    def columns(self) -> list[str]:
        return (["store"] if self.show_store else []) + (["study"] if self.show_study else [])

    def values(self, record: Record) -> list[str]:
        return ([record.store] if self.show_store else []) + ([record.study] if self.show_study else [])

    def label(self, record: Record) -> str:
        return " · ".join(self.values(record))


def ordered_tasks(records: Iterable[Record]) -> list[str]:
    tasks: set[str] = set()
    for r in records:
        tasks.update(r.tasks)
    return sorted(tasks, key=task_sort_key)


def latest_of(candidates: Sequence[Record], where: str, notes: list[str]) -> Record:
    """The latest row among several that land on the same table position; notes what distinguished them."""
    best = max(candidates, key=lambda r: num(r.time) if math.isfinite(num(r.time)) else -math.inf)
    if len(candidates) > 1:
        names = sorted({k for r in candidates for k in r.config})
        differing = [
            k
            for k in names
            if len({repr(r.config.get(k)) for r in candidates}) > 1 and k not in ("checkpoint",)
        ]
        notes.append(
            f"{where}: {len(candidates)} rows for the same position (they differ in "
            f"{', '.join(differing) or 'nothing but the key'}); the latest (key {best.key}) is shown"
        )
    return best


def layout_order(records: Iterable[Record]) -> list[tuple[str, float]]:
    """Layouts by decreasing sharing (all shared first, independent last); ties by name."""
    scores: dict[str, float] = {}
    for r in records:
        score = r.sharing_score
        if r.layout_name not in scores or (math.isnan(scores[r.layout_name]) and not math.isnan(score)):
            scores[r.layout_name] = score
    return sorted(scores.items(), key=lambda kv: (-(kv[1] if math.isfinite(kv[1]) else -1), kv[0]))
