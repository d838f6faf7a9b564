"""One timed forward+backward of the configured model at the configured resolution and batch size."""

from __future__ import annotations

import time

import torch
from omegaconf import DictConfig, OmegaConf

from mtl_robust.models import build_model

# Output channels of the tasks in the configs (the planner builds no data module, so no data is needed).
TASK_CHANNELS = {"seg": 13, "normal": 3, "depth": 1, "edge": 1, "keypoint": 1, "reshading": 3, "sd": 1}


def input_size(cfg: DictConfig) -> tuple[int, int]:
    dataset = cfg.data.get("dataset") or {}
    if dataset.get("height") and dataset.get("width"):
        return int(dataset.height), int(dataset.width)
    transform = ((cfg.data.get("splits") or {}).get("test") or {}).get("transform") or {}
    size = transform.get("size")
    if size:
        return int(size[0]), int(size[1])
    raise ValueError("the planner cannot tell the input resolution of this data config")


def seconds_per_pass(cfg: DictConfig, batch_size: int, device: str, repeats: int = 5) -> float:
    """Seconds of one forward + input-gradient backward per image: the best of `repeats` after a warm-up,
    so that a busy machine is measured in its free moments."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    tasks = {t: TASK_CHANNELS.get(t, 1) for t in cfg.data.tasks}
    model = build_model(**{**model_cfg, "tasks": tasks}).to(device).eval()
    height, width = input_size(cfg)
    x = torch.rand(batch_size, 3, height, width, device=device, requires_grad=True)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(x)
        (grad,) = torch.autograd.grad(sum(v.float().mean() for v in out.values()), x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / batch_size
