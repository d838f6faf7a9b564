"""Short timed calibrations of a model on the machine the planner runs on, kept on disk.

One calibration per (device, backbone and heads, tasks, resolution, batch sizes, precision, threads): the
all-shared layout's forward, attack step (per-sample losses, input gradient, projected sign step) and
training step (forward, losses, backward to the weights, optimiser step), timed interleaved (a busy moment
slows all three alike) and summarised by their median, with the spread of the repeats. Every layout of
that backbone is then its counted FLOPs times these rates (`planning.throughput`), so a sweep of 27
layouts costs one calibration, and later plans none: the file (`MTL_ROBUST_PLAN_CACHE`, default
~/.cache/mtl_robust/planner.json) is reused.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtl_robust.files import atomic_path
from mtl_robust.models import build_model

LARGE_IMAGE = 128 * 128  # on a CPU, images this large cost the same per image at any batch: time two
# On a CPU, larger images are timed at about this many pixels (same aspect): a convolution's FLOP rate
# no longer depends on the image size there, and a 321x321 DeepLab pass takes seconds per repeat.
CPU_TIMED_PIXELS = 128 * 128
CACHE_ENV = "MTL_ROBUST_PLAN_CACHE"


def cache_file() -> Path:
    given = os.environ.get(CACHE_ENV)
    return Path(given) if given else Path.home() / ".cache" / "mtl_robust" / "planner.json"


def device_name(device: str) -> str:
    """The machine a calibration belongs to: the GPU's name, or the CPU's model and the thread count."""
    if device.startswith("cuda"):
        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model} x{torch.get_num_threads()} threads"


@dataclass(frozen=True)
class Calibration:
    """Seconds per image of the reference layout (repeats kept), and its counted forward FLOPs."""

    device: str
    reference_flops: float
    forward: tuple[float, ...]
    gradient: tuple[float, ...]  # forward + backward to the input
    train: tuple[float, ...]  # forward + backward to the weights + optimiser step

    @staticmethod
    def median(values: tuple[float, ...]) -> float:
        return statistics.median(values)

    @property
    def spread(self) -> float:
        """Largest (max - min) / median of the three timings: how noisy the machine was."""
        return max(
            (max(v) - min(v)) / statistics.median(v) for v in (self.forward, self.gradient, self.train)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "reference_flops": self.reference_flops,
            "forward": list(self.forward),
            "gradient": list(self.gradient),
            "train": list(self.train),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            str(data["device"]),
            float(data["reference_flops"]),
            tuple(data["forward"]),
            tuple(data["gradient"]),
            tuple(data["train"]),
        )


def timed_size(device: str, height: int, width: int) -> tuple[int, int]:
    """The resolution a calibration is timed at: the real one, scaled down on a CPU for large images."""
    if device.startswith("cuda") or height * width <= CPU_TIMED_PIXELS:
        return height, width
    scale = (CPU_TIMED_PIXELS / (height * width)) ** 0.5
    return max(8, round(height * scale)), max(8, round(width * scale))


def timed_batch(device: str, batch: int, height: int, width: int) -> int:
    if device.startswith("cuda") or height * width < LARGE_IMAGE:
        return batch
    return min(batch, 2)


def measure(
    model_cfg: Mapping[str, Any],
    tasks: Mapping[str, int],
    size: tuple[int, int],
    batches: tuple[int, int],
    device: str,
    precision: str,
    reference_flops: float,
    repeats: int = 5,
    budget_s: float = 8.0,
) -> Calibration:
    """Time the all-shared layout: after one warm-up of each, up to `repeats` rounds of (forward, gradient,
    training step), fewer once `budget_s` is spent (at least three rounds)."""
    from mtl_robust.attacks.precision import with_precision

    height, width = size
    eval_batch = timed_batch(device, batches[0], height, width)
    train_batch = timed_batch(device, batches[1], height, width)
    model = build_model(**{**dict(model_cfg), "tasks": dict(tasks), "layout": "all_shared"}).to(device)
    evaluated = with_precision(model, precision)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-6)
    x_eval = torch.rand(eval_batch, 3, height, width, device=device)
    x_train = torch.rand(train_batch, 3, height, width, device=device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            evaluated(x_eval)

    def gradient() -> None:  # an attack step: per-sample task losses, the gradient, a projected sign step
        x = x_eval.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(per_sample_losses(evaluated(x)).sum(), x)
        (x + grad.sign() / 255).clamp(0, 1).clamp(x_eval - 8 / 255, x_eval + 8 / 255)

    def train_step() -> None:
        model.train()
        optimiser.zero_grad()
        per_sample_losses(model(x_train)).mean().backward()
        optimiser.step()
        model.eval()

    def timed(fn: Any, batch: int) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return (time.perf_counter() - start) / batch

    model.eval()
    runs: dict[str, list[float]] = {"forward": [], "gradient": [], "train": []}
    for fn, batch in ((forward, eval_batch), (gradient, eval_batch), (train_step, train_batch)):
        timed(fn, batch)  # warm-up
    spent = 0.0
    for i in range(repeats):
        if i >= 3 and spent > budget_s:
            break
        for name, fn, batch in (
            ("forward", forward, eval_batch),
            ("gradient", gradient, eval_batch),
            ("train", train_step, train_batch),
        ):
            seconds = timed(fn, batch)
            runs[name].append(seconds)
            spent += seconds * batch
    return Calibration(
        device_name(device),
        reference_flops,
        tuple(runs["forward"]),
        tuple(runs["gradient"]),
        tuple(runs["train"]),
    )


def per_sample_losses(out: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Stand-ins for the tasks' per-pixel losses, averaged per sample: cross-entropy for a map of several
    channels, an L1 distance for one; the elementwise work around a small model's pass is most of its cost."""
    total = 0.0
    for pred in out.values():
        pred = pred.float()
        if pred.shape[1] > 1:
            target = torch.zeros(pred.shape[0], *pred.shape[2:], dtype=torch.long, device=pred.device)
            loss = torch.nn.functional.cross_entropy(pred, target, reduction="none")
        else:
            loss = pred.abs()
        total = total + loss.flatten(1).mean(1)
    return total  # type: ignore[return-value]


class CalibrationCache:
    """Calibrations and model counts by key, read once and written back whenever one is added."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_file()
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.added = 0

    def get(self, section: str, key: str) -> Any:
        return self.data.get(section, {}).get(key)

    def put(self, section: str, key: str, value: Any) -> None:
        self.data.setdefault(section, {})[key] = value
        self.added += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.data, indent=1, sort_keys=True))


def job_startup_seconds() -> float:
    """Seconds a job spends before its first pass: a fresh interpreter importing the job's modules (torch,
    Lightning, Hydra). The planner has imported the same modules, so this is the CPU time its own process
    has taken so far (a subprocess timing it would cost as much again, and on a busy machine measure
    the other processes)."""
    return time.process_time()
