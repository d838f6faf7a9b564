"""The evaluation precision (`eval.precision`: 32, bf16 or 16): one parser, one formatter, one model wrapper.

At `bf16` / `16` only the model's forward runs under `torch.autocast`; its outputs come back as float32, so
losses, direction weights, the MINMAX LPs and metrics stay float32 (or float64), and the input, its gradient
and x_adv stay float32 (autocast casts inside the forward; the gradient flows back in the input's dtype).
At `32` the model is returned untouched, so results are bit for bit those of a build without this option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.attacks.model_call import declared_task_names, forward_tasks

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
DEFAULT_PRECISION = "32"


def parse_precision(value: Any) -> str:
    """'32', 'bf16' or '16' from a config value (32, '32', 'fp32', 'bf16', 16, 'fp16', 'bf16-mixed', ...)."""
    text = str(value).strip().lower().removesuffix("-mixed").removesuffix("-true")
    text = {"fp32": "32", "float32": "32", "fp16": "16", "float16": "16", "bfloat16": "bf16"}.get(text, text)
    if text not in PRECISIONS:
        raise ValueError(f"eval.precision must be one of 32, bf16, 16; got {value!r}")
    return text


def format_precision(precision: str) -> str:
    return parse_precision(precision)


class AutocastModel(nn.Module):
    """Runs the wrapped model's forward under autocast at `dtype` and returns float32 outputs. Its
    parameters are the wrapped model's (same objects), so eval-mode handling and weight checks see them."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.task_names = declared_task_names(model)

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            preds = forward_tasks(self.model, x, tasks)
        return {t: p.float() for t, p in preds.items()}


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """`model` itself at 32, else the model wrapped in `AutocastModel`."""
    dtype = PRECISIONS[parse_precision(precision)]
    return model if dtype is None else AutocastModel(model, dtype)
