"""Transfer attacks (`attack.surrogate`): x_adv crafted on a surrogate model, evaluated on the target.

The surrogate is loaded and checked (readable, the target's tasks with the same output channels) before
any pass runs; the cell's attack function then ignores the model the evaluation hands it and attacks the
surrogate with the target's task losses. BPDA (`model_bpda`) names the target's submodules and does not
apply to the surrogate; the evaluation precision does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.lightning.checkpoints import CheckpointError
from mtl_robust.lightning.module import MultiTaskModule, load_module
from mtl_robust.values.surrogate import SurrogateSpec

AttackFn = Callable[[nn.Module, Tensor, dict[str, Tensor]], Tensor]
# Resolves training choices ({sharing: independent}) to their cached checkpoint (the pipeline's).
CheckpointResolver = Callable[[SurrogateSpec], Path]


@dataclass(frozen=True)
class Surrogate:
    """A loaded surrogate: the network attacks run on, and its row fields (`SURROGATE_FIELDS`)."""

    model: nn.Module
    fields: dict[str, Any]


def surrogate_path(spec: SurrogateSpec, resolve: CheckpointResolver | None) -> Path:
    if spec.checkpoint is not None:
        return Path(spec.checkpoint)
    if resolve is None:
        raise ValueError(
            f"attack.surrogate={{{', '.join(f'{k}: {v}' for k, v in spec.overrides)}}} names training "
            "choices, which only the pipeline can train or find in its checkpoint cache; the attack job "
            "takes a checkpoint path (attack.surrogate=path/to.ckpt)"
        )
    return resolve(spec)


def load_surrogate(path: Path, target: Any, device: torch.device) -> MultiTaskModule:
    """The surrogate's module, refused when unreadable or when its tasks are not the target's."""
    try:
        surrogate = load_module(path, device).to(device)
    except (CheckpointError, OSError) as err:
        raise ValueError(f"attack.surrogate: {err}") from err
    target_tasks: Mapping[str, Any] = target.tasks
    if set(surrogate.tasks) != set(target_tasks):
        raise ValueError(
            f"attack.surrogate {path} predicts tasks {sorted(surrogate.tasks)} but the attacked model has "
            f"{sorted(target_tasks)}: a transfer attack needs a surrogate with the target's tasks"
        )
    for name, task in target_tasks.items():
        if surrogate.tasks[name].out_channels != task.out_channels:
            raise ValueError(
                f"attack.surrogate {path}: task {name!r} has {surrogate.tasks[name].out_channels} output "
                f"channels, the attacked model {task.out_channels}"
            )
    return surrogate


def crafted_on(surrogate: nn.Module, attack: AttackFn) -> AttackFn:
    """The cell's attack function: x_adv from `attack` run on the surrogate, whatever model is evaluated."""

    def transfer(model: nn.Module, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        return attack(surrogate, x, targets)

    return transfer
