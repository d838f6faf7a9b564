"""Run a model in eval mode for the duration of an attack and give every submodule its own mode back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` (all submodules) in eval mode; restore each submodule's previous `training` flag.

    Restoring per submodule matters: a model whose backbone is frozen in eval mode while its heads train
    must come back exactly like that, which a single `model.train(previous)` would break.
    """
    previous = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in previous:
            module.training = training
