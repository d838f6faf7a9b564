"""The order rows, columns and series take in every table and figure: tasks, methods, defenses, layouts."""

from __future__ import annotations

import math
from collections.abc import Iterable

from mtl_robust.report.records import Record
from mtl_robust.values.direction import TASK_ORDER

METHOD_ORDER = ("fgsm", "pgd", "mim", "apgd", "apgd_paper", "square")


def task_sort_key(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task), "") if task in TASK_ORDER else (len(TASK_ORDER), task)


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def defense_sort_key(defense: str) -> tuple[int, str]:
    return (0 if defense == "none" else 1, defense)


def family_attack_order(data: str, backbone: str, defense: str, method: str) -> tuple:
    """The shared prefix of every table's and figure's order: data set, backbone, defense (undefended
    first), attack method (paper order)."""
    return (data, backbone, defense_sort_key(defense), method_sort_key(method))


def ordered_tasks(records: Iterable[Record]) -> list[str]:
    tasks: set[str] = set()
    for r in records:
        tasks.update(r.tasks)
    return sorted(tasks, key=task_sort_key)


def layout_order(records: Iterable[Record]) -> list[tuple[str, float]]:
    """Layouts by decreasing sharing (all shared first, independent last); ties by name."""
    scores: dict[str, float] = {}
    for r in records:
        score = r.sharing_score
        if r.layout_name not in scores or (math.isnan(scores[r.layout_name]) and not math.isnan(score)):
            scores[r.layout_name] = score
    return sorted(scores.items(), key=lambda kv: (-(kv[1] if math.isfinite(kv[1]) else -1), kv[0]))


def layout_ranks(records: Iterable[Record]) -> dict[str, int]:
    """Layout name -> its position in `layout_order` (a sort key)."""
    return {name: i for i, (name, _score) in enumerate(layout_order(records))}
