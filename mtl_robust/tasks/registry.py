"""Task registry: build task specs by name (also from a checkpoint's `task.config()`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from mtl_robust.tasks.base import Task
from mtl_robust.tasks.depth import DepthTask
from mtl_robust.tasks.edge import EdgeTask
from mtl_robust.tasks.human_parts import HumanPartsTask
from mtl_robust.tasks.normal import NormalTask
from mtl_robust.tasks.regression import RegressionTask
from mtl_robust.tasks.saliency import SaliencyTask
from mtl_robust.tasks.segmentation import SegmentationTask

# name -> factory(**kwargs) -> Task. Add an entry to register a new task.
TASKS: dict[str, Callable[..., Task]] = {
    "seg": SegmentationTask,
    "normal": NormalTask,
    "depth": DepthTask,
    "keypoints": partial(RegressionTask, "keypoints"),
    "edges": partial(RegressionTask, "edges"),
    # PASCAL-Context's: "edge" is a binary boundary map, unlike Taskonomy's "edges" regression.
    "human_parts": HumanPartsTask,
    "saliency": SaliencyTask,
    "edge": EdgeTask,
}


def build_task(name: str, **kwargs: Any) -> Task:
    """Build the task spec registered as `name`, e.g. `build_task("seg", num_classes=40)`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}")
    try:
        return TASKS[name](**kwargs)
    except TypeError as err:
        accepted = sorted(_accepted(TASKS[name]))
        raise ValueError(
            f"task {name!r}: bad arguments {sorted(kwargs)}; accepted: {accepted} ({err})"
        ) from err


def build_tasks(
    names: Iterable[str],
    *,
    task_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    **common: Any,
) -> dict[str, Task]:
    """Build several task specs at once, in the order of `names`.

    `common` holds per-dataset or per-study arguments (e.g. `num_classes`, `class_weights`, `resize`); each
    task receives those its constructor accepts, so `num_classes` reaches only "seg". `task_kwargs[name]`
    adds or overrides arguments for one task. An argument no registered task accepts is an error (a typo).

    Example: `build_tasks(ds.tasks, num_classes=ds.num_classes, resize="target")`.
    """
    names = list(names)
    task_kwargs = dict(task_kwargs or {})
    unknown = [n for n in list(names) + list(task_kwargs) if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; registered tasks: {sorted(TASKS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"build_tasks: task names repeat: {names}")
    accepted_anywhere = set().union(*(_accepted(f) for f in TASKS.values()))
    stray = sorted(set(common) - accepted_anywhere)
    if stray:
        raise ValueError(f"build_tasks: no task accepts {stray}; accepted: {sorted(accepted_anywhere)}")
    tasks = {}
    for name in names:
        accepted = _accepted(TASKS[name])
        kwargs = {k: v for k, v in common.items() if k in accepted}
        kwargs.update(task_kwargs.get(name, {}))
        tasks[name] = build_task(name, **kwargs)
    return tasks


def _accepted(factory: Callable[..., Task]) -> set[str]:
    params = inspect.signature(factory).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
