"""Call any multi-task model the same way: the one adaptor attacks (and the evaluation) go through.

Models trained here take `model(x, tasks=[...])` and run only the branches asked for. Most research code
(LibMTL, MTAN, plain `nn.Module`s) has `forward(x)` and returns a dict, or a list/tuple of per-task outputs.
`forward_tasks` passes `tasks=` only when the forward accepts it, and turns list/tuple outputs into a dict
using the task names the model declares (`model.task_names` or a `tasks` list) or a `MultiTaskAdapter`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn


def accepts_tasks_keyword(model: nn.Module) -> bool:
    """True when `model.forward` takes a `tasks` argument (or any **kwargs)."""
    cached = getattr(model, "_mtl_accepts_tasks", None)
    if isinstance(cached, bool):
        return cached
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # builtins / scripted modules: do not guess, call without
        return False
    return "tasks" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def declared_task_names(model: nn.Module) -> list[str] | None:
    """Names that label a list/tuple output: `model.task_names`, else a list/tuple `model.tasks`."""
    for attr in ("task_names", "tasks"):
        value = getattr(model, attr, None)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    return None


def as_task_dict(output: Any, names: Sequence[str] | None) -> dict[str, Tensor]:
    """A model output (dict, or list/tuple in the order of `names`) as dict[task, Tensor]."""
    if isinstance(output, Mapping):
        return dict(output)
    if isinstance(output, (list, tuple)):
        if names is None:
            raise TypeError(
                "the model returned a list/tuple but no task names say which entry is which task; give the "
                "model a `task_names` attribute or wrap it: MultiTaskAdapter(model, task_names=[...])"
            )
        if len(output) != len(names):
            raise ValueError(
                f"the model returned {len(output)} outputs but {len(names)} task names {list(names)}"
            )
        return dict(zip(names, output))
    raise TypeError(
        f"a multi-task model must return a dict task -> Tensor or a list/tuple of Tensors, got "
        f"{type(output).__name__}"
    )


def forward_tasks(model: nn.Module, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
    """`model(x, tasks=tasks)` when the forward accepts it, else `model(x)`; the output as a dict."""
    if tasks is not None and accepts_tasks_keyword(model):
        output = model(x, tasks=list(tasks))
    else:
        output = model(x)
    return as_task_dict(output, declared_task_names(model))


class MultiTaskAdapter(nn.Module):
    """Wrap a user model so it behaves like the models trained here: `adapter(x, tasks=None) -> dict`.

    The wrapped model's parameters and buffers are the adapter's (same objects), so eval-mode handling and
    weight loading see them; `task_names` orders list/tuple outputs and is the task list of the model.
    """

    def __init__(self, model: nn.Module, task_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"MultiTaskAdapter wraps an nn.Module, got {type(model).__name__}")
        self.model = model
        names = list(task_names) if task_names is not None else declared_task_names(model)
        if names is not None and (not names or len(set(names)) != len(names)):
            raise ValueError(f"task_names must be distinct and non-empty, got {names}")
        self.task_names = names

    @property
    def tasks(self) -> tuple[str, ...] | None:
        return None if self.task_names is None else tuple(self.task_names)

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        if tasks is not None and accepts_tasks_keyword(self.model):
            output = self.model(x, tasks=list(tasks))
        else:
            output = self.model(x)
        preds = as_task_dict(output, self.task_names)
        return preds if tasks is None else {t: preds[t] for t in tasks if t in preds}
