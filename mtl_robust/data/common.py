"""What every reader checks the same way."""

from __future__ import annotations

from collections.abc import Sequence


def select_tasks(tasks: Sequence[str], available: Sequence[str], dataset: str) -> tuple[str, ...]:
    """The requested tasks, validated against what the data set provides, in the order given."""
    if isinstance(tasks, str):
        raise ValueError(
            f"tasks must be a sequence of task names, not the string {tasks!r}; e.g. ({tasks!r},)"
        )
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError(f"tasks must name at least one of {tuple(available)}")
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise ValueError(f"unknown task name(s) {unknown}; {dataset} provides {tuple(available)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks contains duplicates: {tasks}")
    return tasks
