"""The tree-structured multi-task model: one backbone copy per (fine block, task group), one head per task.

For every fine block f and every task group g of f's coarse block, the model holds a deep copy of the
backbone's block f, so tasks in one group really share those parameters and all branches start from the
same initialisation (as TreeMTL's layout models do). A forward pass walks the blocks in order and computes
each group's output once, from the output of its parent group (the group one block up that contains it);
asking for a subset of the tasks runs only the groups on their paths, plus their heads.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, build_backbone, check_backbone
from .heads import build_head
from .layout import Layout, resolve_layout
from .normalization import InputNormalization

__all__ = ["MultiTaskModel", "build_model", "count_parameters"]


def count_parameters(params: nn.Module | Iterable[nn.Parameter], trainable_only: bool = False) -> int:
    """Number of scalar parameters, each tensor counted once even if it is reached several times."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    seen: dict[int, int] = {}
    for p in params:
        if trainable_only and not p.requires_grad:
            continue
        seen[id(p)] = p.numel()
    return sum(seen.values())


class MultiTaskModel(nn.Module):
    """`model(x, tasks=None) -> {task: prediction [N, C_t, H, W]}` for [0, 1] RGB inputs `x` [N, 3, H, W].

    Built by `build_model` (which also records `spec`, the JSON-serialisable recipe that rebuilds the same
    architecture); it can also be assembled directly from a `Backbone`, a `Layout` over the task names and
    one head per task, in which case `spec` is whatever the caller passes (None by default).
    """

    def __init__(
        self,
        backbone: Backbone,
        layout: Layout,
        heads: Mapping[str, nn.Module],
        normalization: str | nn.Module = "imagenet",
        upsample: bool = True,
        spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        tasks = layout.tasks
        if set(heads) != set(tasks):
            raise ValueError(f"need exactly one head per layout task {tasks}; got heads for {sorted(heads)}")
        for t in tasks:
            if "." in t:
                raise ValueError(f"task names cannot contain '.', got {t!r}")
        check_backbone(backbone, getattr(backbone, "name", "") or type(backbone).__name__)
        if layout.num_blocks != backbone.num_coarse_blocks:
            raise ValueError(
                f"layout {layout.describe()!r} has {layout.num_blocks} blocks but backbone "
                f"{backbone.name or type(backbone).__name__} has {backbone.num_coarse_blocks} coarse blocks"
            )
        self.layout = layout
        self.tasks: tuple[str, ...] = tasks
        self.spec = spec
        self.upsample = bool(upsample)
        self.coarse_groups = [list(g) for g in backbone.coarse_groups]
        self.feature_channels = backbone.out_channels
        self.output_stride = backbone.output_stride
        self.normalization = (
            normalization if isinstance(normalization, nn.Module) else InputNormalization(normalization)
        )

        # groups[f][g]: task indices of group g at fine block f (canonical order)
        self._groups: list[list[tuple[int, ...]]] = layout.fine_state(backbone.coarse_groups)
        self.branches = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(backbone.blocks[f]) for _ in groups)
            for f, groups in enumerate(self._groups)
        )
        self._parents: list[list[int]] = [[-1] * len(self._groups[0])]
        for f in range(1, len(self._groups)):
            above = self._groups[f - 1]
            self._parents.append(
                [next(i for i, up in enumerate(above) if set(g) <= set(up)) for g in self._groups[f]]
            )
        self._path: dict[str, list[int]] = {
            name: [next(i for i, g in enumerate(groups) if t in g) for groups in self._groups]
            for t, name in enumerate(tasks)
        }
        self.heads = nn.ModuleDict({t: heads[t] for t in tasks})

    # ----- structure queries ------------------------------------------------------------------------
    @property
    def num_fine_blocks(self) -> int:
        return len(self._groups)

    def _select(self, tasks: Sequence[str] | str | None) -> list[str]:
        if tasks is None:
            return list(self.tasks)
        if isinstance(tasks, str):
            tasks = [tasks]
        names = list(dict.fromkeys(tasks))
        if not names:
            raise ValueError(f"tasks is empty; pass None for all tasks {self.tasks} or a subset of them")
        unknown = [t for t in names if t not in self._path]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model predicts {self.tasks}")
        return names

    def block_for(self, task: str, fine_block: int) -> nn.Module:
        """The module that computes fine block `fine_block` on `task`'s path (shared within its group)."""
        (name,) = self._select([task])
        return self.branches[fine_block][self._path[name][fine_block]]

    def task_modules(self, task: str) -> list[nn.Module]:
        """The backbone blocks on `task`'s path, in order, followed by its head."""
        (name,) = self._select([task])
        return [self.branches[f][g] for f, g in enumerate(self._path[name])] + [self.heads[name]]

    def parameter_count(self, task: str | None = None, trainable_only: bool = False) -> int:
        """Parameters of the whole model, or those `task` uses (its path and head; shared ones count once)."""
        if task is None:
            return count_parameters(self, trainable_only)
        params = (p for m in self.task_modules(task) for p in m.parameters())
        return count_parameters(params, trainable_only)

    def backbone_parameter_count(self) -> int:
        return count_parameters(self.branches)

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, layout={self.layout.describe()!r}, upsample={self.upsample}"

    # ----- forward ------------------------------------------------------------------------------------
    def forward_features(
        self, x: torch.Tensor, tasks: Sequence[str] | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Backbone features [N, C, h, w] at the end of each requested task's path."""
        names = self._select(tasks)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected a batch of images [N, 3, H, W] in [0, 1], got {shape}")
        h = self.normalization(x)
        outputs: dict[int, torch.Tensor] = {}
        for f, blocks in enumerate(self.branches):
            needed = sorted({self._path[t][f] for t in names})
            if f == 0:
                outputs = {g: blocks[g](h) for g in needed}
            else:
                parents = self._parents[f]
                outputs = {g: blocks[g](outputs[parents[g]]) for g in needed}
        return {t: outputs[self._path[t][-1]] for t in names}

    def forward(self, x: torch.Tensor, tasks: Sequence[str] | str | None = None) -> dict[str, torch.Tensor]:
        features = self.forward_features(x, tasks)
        out = {}
        for t, feat in features.items():
            y = self.heads[t](feat)
            if self.upsample and y.shape[-2:] != x.shape[-2:]:
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out[t] = y
        return out


# ----- building from a spec ---------------------------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    """Config values (dicts, lists, OmegaConf containers) -> plain JSON types, so the spec can be saved."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Iterable):
        return [_plain(v, f"{where}[]") for v in value]
    raise ValueError(f"{where}: {value!r} ({type(value).__name__}) is not JSON-serialisable")


def _split_name(spec: str | Mapping[str, Any], what: str) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        kwargs = _plain(spec, what)
        if "name" not in kwargs:
            raise ValueError(f"{what} given as a mapping needs a 'name' key, got keys {sorted(kwargs)}")
        return str(kwargs.pop("name")), kwargs
    raise ValueError(f"{what} must be a name or a mapping with 'name' and keyword arguments, got {spec!r}")


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    # forked so that building a model does not move the caller's global RNG stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def build_model(
    backbone: str | Mapping[str, Any],
    tasks: Mapping[str, int],
    layout: Any,
    head: str | Mapping[str, Any] = "light",
    normalization: str = "imagenet",
    upsample: bool = True,
    seed: int | None = None,
) -> MultiTaskModel:
    """Build a tree multi-task model.

    backbone / head: a registry name, or ``{"name": ..., **kwargs}``.
    tasks: ``{task name: output channels}``; its order is the task order of the layout (TreeMTL indices
        assume NYUv2's seg, normal, depth and Taskonomy's json order).
    layout: anything `resolve_layout` accepts (name, TreeMTL index, explicit groups, string, Layout).
    seed: if given, the backbone and heads are initialised from this seed without touching the global RNG.
    """
    bname, bkwargs = _split_name(backbone, "backbone")
    hname, hkwargs = _split_name(head, "head")
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"tasks must be a non-empty mapping {{task name: output channels}}, got {tasks!r}")
    task_channels = _plain(tasks, "tasks")
    for t, c in task_channels.items():
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"task {t!r}: output channels must be a positive int, got {c!r}")
    with _seeded(seed):
        bb = build_backbone(bname, **bkwargs)
        lay = resolve_layout(layout, tuple(task_channels), bb.num_coarse_blocks)
        heads = {t: build_head(hname, bb.out_channels, c, **hkwargs) for t, c in task_channels.items()}
        spec = {
            "backbone": {"name": bname, **bkwargs},
            "tasks": task_channels,
            "layout": lay.to_list(),
            "head": {"name": hname, **hkwargs},
            "normalization": str(normalization),
            "upsample": bool(upsample),
            "seed": None if seed is None else int(seed),
        }
        json.dumps(spec)  # fail here rather than when a checkpoint is written
        model = MultiTaskModel(bb, lay, heads, normalization=normalization, upsample=upsample, spec=spec)
    return model
