"""BPDA (straight-through gradients) for non-differentiable input transforms of a model (`model_bpda`).

A defense that quantises, JPEG-compresses or otherwise rounds its input has a zero (or useless) input
gradient, so gradient attacks cannot move. BPDA keeps the transform's forward output and replaces its
backward by the identity: the named submodule f returns f(x) in value, and its input gradient is that of
x + (f(x) - x).detach(). That needs f to keep the shape of its input, which is checked on every call.

`with_bpda(model, ["preprocess.quantise"])` wraps the model without touching it: the straight-through is
forward hooks on the named submodules (dotted paths as `named_modules` writes them, relative to the user's
network, not to its `MultiTaskAdapter`), registered for the duration of each forward of the wrapper and
removed afterwards. Parameters, buffers and modes stay the model's own; the forward values are the model's
bit for bit (f(x) + (x - x) adds an exact zero).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.attacks.model_call import MultiTaskAdapter, declared_task_names, forward_tasks
from mtl_robust.attacks.model_mode import eval_mode


def parse_bpda(value: Any) -> tuple[str, ...]:
    """The BPDA targets from a config value: None or [] (none), one dotted name, or a list of them."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else None
    if names is None or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"model_bpda must be a list of submodule names (dotted paths), got {value!r}")
    names = [n.strip() for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"model_bpda names a submodule twice: {names}")
    return tuple(names)


def network_of(model: nn.Module) -> nn.Module:
    """The module BPDA names are relative to: the user's own network inside a `MultiTaskAdapter`."""
    return model.model if isinstance(model, MultiTaskAdapter) else model


def resolve_targets(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """name -> submodule; an unknown name fails here, listing the names there are."""
    modules = dict(network_of(model).named_modules())
    out = {}
    for name in names:
        if name not in modules or name == "":
            known = [n for n in modules if n][:20]
            raise ValueError(
                f"model_bpda: the model has no submodule {name!r}; its submodules include {known} "
                "(dotted paths as model.named_modules() lists them)"
            )
        out[name] = modules[name]
    return out


def _straight_through_hook(name: str):
    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Tensor:
        x = inputs[0] if inputs else None
        if not isinstance(x, Tensor) or not isinstance(output, Tensor) or output.shape != x.shape:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            given = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"model_bpda: submodule {name!r} maps its input {given} to {got}; BPDA replaces a transform "
                "by the identity in the backward pass, so it must return a tensor of its input's shape"
            )
        # The value is f(x) exactly (x - x is an exact zero); the gradient reaching x is the identity's.
        return output.detach() + (x - x.detach()).to(output.dtype)

    return hook


@contextmanager
def straight_through(targets: Mapping[str, nn.Module]) -> Iterator[None]:
    """Straight-through backward for `targets` while the block runs; the hooks are removed on exit."""
    handles = [module.register_forward_hook(_straight_through_hook(name)) for name, module in targets.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class StraightThroughModel(nn.Module):
    """`model` with BPDA on the named submodules. Its parameters are the model's (same objects)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.targets = resolve_targets(model, self.names)
        self.task_names = declared_task_names(model)

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        with straight_through(self.targets):
            return forward_tasks(self.model, x, tasks)


def with_bpda(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """`model` itself without names, else wrapped in `StraightThroughModel` (unknown names fail here)."""
    return StraightThroughModel(model, names) if names else model


def check_bpda(model: nn.Module, x: Tensor) -> None:
    """One forward on real images, so that a target that changes its input's shape fails before any work."""
    if any(isinstance(m, StraightThroughModel) for m in model.modules()):
        with eval_mode(model), torch.no_grad():
            forward_tasks(model, x)
