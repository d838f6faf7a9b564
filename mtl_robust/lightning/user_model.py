"""Bring your own model: evaluate any `nn.Module` given by `_target_` plus a weights file.

    python -m mtl_robust.attack 'model={_target_: my_pkg.MyNet, width: 64}' model_weights=weights.pt \
        data=... attack=...

The model's forward may be `forward(x)` (or `forward(x, tasks=...)`) and return a dict task -> prediction
or a list/tuple in the order of `model_task_names` (default: the data's tasks). Inputs are RGB in [0, 1]:
normalisation belongs inside the model. Weights are a state_dict (or a dict holding one under
`state_dict`), loaded with `torch.load(weights_only=True)`, so a weights file cannot run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mtl_robust.attacks.model_call import MultiTaskAdapter
from mtl_robust.models.fingerprint import weights_fingerprint
from mtl_robust.tasks import Task


@dataclass
class UserModule:
    """What evaluation needs of a model: the (adapted) network and the task specs it is scored on."""

    model: nn.Module
    tasks: dict[str, Task]


def is_user_model(cfg: DictConfig) -> bool:
    """Whether the job evaluates a model of the user's (`model._target_`) instead of one it trains."""
    return bool(cfg.get("model")) and "_target_" in cfg.model


def load_weights(model: nn.Module, path: str | Path, device: torch.device) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model_weights file {path} not found (a torch.save'd state_dict)")
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"model_weights {path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"model_weights {path} do not fit {type(model).__name__}: {err}") from err


def load_user_model(cfg: DictConfig, tasks: dict[str, Task], device: torch.device) -> UserModule:
    """Instantiate `cfg.model`, load `cfg.model_weights`, wrap it so attacks and passes get dicts."""
    if "_target_" not in cfg.model:
        raise ValueError("model= needs a _target_, e.g. model._target_=my_pkg.MyNet")
    model = instantiate(cfg.model)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model._target_={cfg.model._target_} built a {type(model).__name__}, not an nn.Module"
        )
    if cfg.get("model_weights"):
        load_weights(model, cfg.model_weights, device)
    names = list(cfg.get("model_task_names") or tasks)
    adapter = MultiTaskAdapter(model, task_names=names).to(device).eval()
    return UserModule(model=adapter, tasks=tasks)


def check_user_outputs(module: UserModule, x: torch.Tensor) -> None:
    """One forward on real images: every task has a prediction with the channels its task expects."""
    with torch.no_grad():
        preds = module.model(x)
    for name, task in module.tasks.items():
        if name not in preds:
            raise ValueError(
                f"the model returned no prediction for task {name!r}; it returned {sorted(preds)}"
            )
        pred = preds[name]
        if not isinstance(pred, torch.Tensor) or pred.dim() != 4 or pred.shape[1] != task.out_channels:
            shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
            raise ValueError(
                f"task {name!r}: the model's prediction must be [N, {task.out_channels}, H, W], got {shape}"
            )


def user_model_info(cfg: DictConfig, module: UserModule, data: str, split: str, study: str) -> dict[str, Any]:
    """The model-identity part of a row for a user model (hash of its config and its weights)."""
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    weights = cfg.get("model_weights")
    target = str(spec["_target_"])
    return {
        "study": study,
        "checkpoint": str(weights or ""),
        "model_id": weights_fingerprint(spec, module.model),
        "data": data,
        "split": split,
        "tasks": list(module.tasks),
        "backbone": target,
        "layout": f"user model {target}",
        "layout_name": target.rsplit(".", 1)[-1],
        "sharing_score": None,
        "shared_fraction": None,
        "defense": str(cfg.get("model_defense") or "none"),
    }
