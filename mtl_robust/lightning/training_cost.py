"""What a training run cost: model forward and backward passes and wall time per training iteration.

Counted, not declared: a forward hook on the model counts every forward it runs during a training
iteration (the attack's crafting forwards included), and a gradient hook on the outputs of each such
forward counts every backward that reaches any of them, once (input-only backwards of the attack, the
weights' backward, a GradAlign double backward, the one backward per task of a gradient aggregator). Wall
time is taken from the start to the end of each training iteration (forward, backward and optimiser step,
in automatic and manual optimisation alike). Ratios against clean training are only
meaningful between runs measured on the same machine, ideally in one process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class TrainingCost:
    """Counters of one training run; `as_dict()` is what checkpoints and results rows carry."""

    def __init__(self) -> None:
        self.iterations = 0
        self.optimizer_steps = 0
        self.forward_passes = 0
        self.backward_passes = 0
        self.seconds = 0.0
        self._active = False
        self._started = 0.0

    def attach(self, model: nn.Module) -> None:
        model.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self._active:
            return
        self.forward_passes += 1
        tensors = output.values() if isinstance(output, Mapping) else [output]
        tracked = [v for v in tensors if isinstance(v, Tensor) and v.requires_grad]
        if tracked:
            # Once per backward that reaches any output: a per-task backward reaches its task's output only.
            torch.autograd.graph.register_multi_grad_hook(tracked, self._on_backward, mode="any")

    def _on_backward(self, grad: Any) -> None:
        self.backward_passes += 1

    def begin_iteration(self) -> None:
        self._active = True
        self._started = time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave out work that is not training (the overfitting watch's checks), passes and time alike."""
        active, paused_at = self._active, time.perf_counter()
        self._active = False
        try:
            yield
        finally:
            self._active = active
            self._started += time.perf_counter() - paused_at

    def end_iteration(self, optimizer_steps: int = 1) -> None:
        if not self._active:
            return
        self.seconds += time.perf_counter() - self._started
        self.iterations += 1
        self.optimizer_steps += int(optimizer_steps)
        self._active = False

    def as_dict(self) -> dict[str, float | int]:
        n = max(self.iterations, 1)
        return {
            "iterations": self.iterations,
            "optimizer_steps": self.optimizer_steps,
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
            "seconds": round(self.seconds, 6),
            "passes_per_iteration": round((self.forward_passes + self.backward_passes) / n, 6),
            "seconds_per_iteration": round(self.seconds / n, 9),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.iterations = int(state.get("iterations", 0))
        self.optimizer_steps = int(state.get("optimizer_steps", 0))
        self.forward_passes = int(state.get("forward_passes", 0))
        self.backward_passes = int(state.get("backward_passes", 0))
        self.seconds = float(state.get("seconds", 0.0))
