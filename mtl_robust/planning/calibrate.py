"""One timed forward+backward of the configured model at the configured resolution and batch size."""

from __future__ import annotations

import subprocess
import sys
import time

import torch
from omegaconf import DictConfig, OmegaConf

from mtl_robust.models import build_model

# Output channels of the tasks in the configs (the planner builds no data module, so no data is needed).
TASK_CHANNELS = {"seg": 13, "normal": 3, "depth": 1, "edge": 1, "keypoint": 1, "reshading": 3, "sd": 1}


LARGE_IMAGE = 128 * 128


def input_size(cfg: DictConfig) -> tuple[int, int]:
    dataset = cfg.data.get("dataset") or {}
    if dataset.get("height") and dataset.get("width"):
        return int(dataset.height), int(dataset.width)
    transform = ((cfg.data.get("splits") or {}).get("test") or {}).get("transform") or {}
    size = transform.get("size")
    if size:
        return int(size[0]), int(size[1])
    raise ValueError("the planner cannot tell the input resolution of this data config")


def job_startup_seconds() -> float:
    """Seconds a job spends before its first pass: a fresh interpreter importing the job's modules (torch,
    Lightning, Hydra), timed once in a subprocess."""
    code = "import mtl_robust.jobs.pipeline, pytorch_lightning"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def seconds_per_pass(
    cfg: DictConfig, batch_size: int, device: str, repeats: int = 5, budget_s: float = 20.0
) -> float:
    """Seconds of one forward + input-gradient backward per image: the best of up to `repeats` after a
    warm-up, so that a busy machine is measured in its free moments; slow models (paper scale on a CPU)
    stop after two timed passes once `budget_s` is spent. On a CPU, images of 128x128 and more are timed
    two at a time: their cost per image no longer depends on the batch there."""
    height, width = input_size(cfg)
    if not device.startswith("cuda") and height * width >= LARGE_IMAGE:
        batch_size = min(batch_size, 2)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    tasks = {t: TASK_CHANNELS.get(t, 1) for t in cfg.data.tasks}
    model = build_model(**{**model_cfg, "tasks": tasks}).to(device).eval()
    x = torch.rand(batch_size, 3, height, width, device=device, requires_grad=True)
    best = float("inf")
    spent = 0.0
    for i in range(repeats + 1):
        if i >= 3 and spent > budget_s:
            break
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(x)
        (grad,) = torch.autograd.grad(sum(v.float().mean() for v in out.values()), x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        spent += elapsed
        if i > 0:  # the first pass warms up
            best = min(best, elapsed)
    return best / batch_size
