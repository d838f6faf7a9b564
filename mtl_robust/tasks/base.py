"""The `Task` spec base class and the helpers all tasks share.

A task spec is plain Python (not an `nn.Module`): it holds no parameters, only the rules that turn a head's
raw prediction and a target into a per-sample loss and into dataset-level metrics. Attacks, training and
evaluation all go through this one interface, so the loss an attack ascends is exactly the training loss.

Resolution (`resize`):
  * ``"pred"`` (default): the prediction is bilinearly resized (align_corners=False) to the target size
    before the loss and the metrics.
  * ``"target"`` (faithful to the paper code, docs/method.md quirks 6 and 7): the loss is computed at
    prediction resolution on a nearest-downsampled target, and the metrics nearest-upsample the prediction.
  * ``"none"``: prediction and target must already have the same size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

RESIZE_MODES = ("pred", "target", "none")


class Task(ABC):
    """Spec of one dense prediction task.

    Subclasses set the class attributes `metric_directions` (every metric they can compute -> whether
    higher is better), `default_metrics` and `loss_name`, and implement `_pixel_loss`, `_valid` and
    `_make_metric`. Targets are checked and brought to one layout by `_prepare_target` (dense float
    targets: [N, C, H, W] float32).
    """

    metric_directions: ClassVar[dict[str, bool]] = {}
    default_metrics: ClassVar[tuple[str, ...]] = ()
    loss_name: str = ""

    def __init__(
        self,
        name: str,
        out_channels: int,
        *,
        target_channels: int | None,
        resize: str = "pred",
        metrics: Sequence[str] | None = None,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"task {name!r}: resize must be one of {RESIZE_MODES}, got {resize!r}")
        if int(out_channels) < 1:
            raise ValueError(f"task {name!r}: out_channels must be >= 1, got {out_channels}")
        self.name = name
        self.out_channels = int(out_channels)
        # None marks an integer label map [N, H, W] (segmentation) instead of a [N, C, H, W] float target.
        self.target_channels = target_channels
        self.resize = resize
        chosen = tuple(self.default_metrics if metrics is None else metrics)
        unknown = [m for m in chosen if m not in self.metric_directions]
        if unknown or not chosen:
            raise ValueError(
                f"task {name!r}: metrics must be a non-empty subset of {tuple(self.metric_directions)}, "
                f"got {chosen!r}"
            )
        self.metrics = chosen

    # ----------------------------------------------------------------------------------------- public API
    @property
    def higher_is_better(self) -> dict[str, bool]:
        """Direction of every metric `metric().compute()` returns (exactly those keys)."""
        return {m: self.metric_directions[m] for m in self.metrics}

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss [N] (float32): mean over each sample's valid pixels, 0 where none is valid."""
        target = self._prepare_target(target)
        pred = self._check_pred(pred, target)
        if self.resize == "pred":
            pred = resize_pred(pred, target.shape[-2:], "bilinear")
        elif self.resize == "target":
            target = resize_target(target, pred.shape[-2:])
        values, weights = self._pixel_loss(pred, target)
        return masked_sample_mean(values, weights)

    def valid_mask(self, target: Tensor) -> Tensor:
        """Bool [N, H, W]: pixels that count in the loss and the metrics (at target resolution)."""
        return self._valid(self._prepare_target(target))

    def valid_count(self, target: Tensor) -> Tensor:
        """Number of valid pixels per sample, int64 [N]."""
        return self.valid_mask(target).sum(dim=(1, 2))

    def metric(self, **metric_kwargs: Any) -> Metric:
        """A fresh torchmetrics `Metric`; `update(pred, target)` takes raw head outputs.

        `metric_kwargs` go to `torchmetrics.Metric` (e.g. `sync_on_compute`).
        """
        return self._make_metric(**metric_kwargs)

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this task: `build_task(**task.config())`."""
        return {
            "name": self.name,
            "resize": self.resize,
            "metrics": list(self.metrics),
            **self._extra_config(),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------------------------- for subclasses
    @abstractmethod
    def _pixel_loss(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(values, weights), both float [N, H, W], on prepared inputs of equal size.

        `values` must be finite everywhere (also at invalid pixels) so masked pixels cannot leak NaN into
        the gradient; `weights` is 0 at invalid pixels.
        """

    @abstractmethod
    def _valid(self, target: Tensor) -> Tensor:
        """Bool [N, H, W] from a prepared target."""

    @abstractmethod
    def _make_metric(self, **metric_kwargs: Any) -> Metric: ...

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def _prepare_target(self, target: Tensor) -> Tensor:
        """Check a dense float target and return it as float32 [N, C, H, W]."""
        c = self.target_channels
        if not isinstance(target, Tensor):
            raise ValueError(
                f"task {self.name!r}: target must be a torch.Tensor, got {type(target).__name__}"
            )
        if target.dim() == 3 and c == 1:
            target = target.unsqueeze(1)
        if target.dim() != 4 or target.shape[1] != c:
            raise ValueError(
                f"task {self.name!r}: target must have shape [N, {c}, H, W]"
                + (" (or [N, H, W])" if c == 1 else "")
                + f", got {tuple(target.shape)}"
            )
        if target.dtype == torch.bool or target.is_complex():
            raise ValueError(f"task {self.name!r}: target must be a real float tensor, got {target.dtype}")
        return target.float()

    def _check_pred(self, pred: Tensor, target: Tensor) -> Tensor:
        """Check a raw prediction against a prepared target; return it as float32."""
        if not isinstance(pred, Tensor):
            raise ValueError(f"task {self.name!r}: pred must be a torch.Tensor, got {type(pred).__name__}")
        if pred.dim() != 4 or pred.shape[1] != self.out_channels:
            raise ValueError(
                f"task {self.name!r}: pred must have shape [N, {self.out_channels}, h, w] (the head's raw "
                f"output), got {tuple(pred.shape)}; check the head's out_channels"
            )
        if not pred.is_floating_point():
            raise ValueError(f"task {self.name!r}: pred must be a float tensor, got {pred.dtype}")
        if pred.shape[0] != target.shape[0]:
            raise ValueError(
                f"task {self.name!r}: pred has batch size {pred.shape[0]} but target has {target.shape[0]}"
            )
        if self.resize == "none" and pred.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"task {self.name!r}: pred size {tuple(pred.shape[-2:])} != target size "
                f"{tuple(target.shape[-2:])} with resize='none'; use resize='pred' or 'target'"
            )
        if pred.device != target.device:
            raise ValueError(f"task {self.name!r}: pred is on {pred.device} but target on {target.device}")
        return pred.float()

    def _metric_inputs(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Prepared (pred, target) at target resolution for a metric update, detached."""
        target = self._prepare_target(target).detach()
        pred = self._check_pred(pred, target).detach()
        mode = "nearest" if self.resize == "target" else "bilinear"
        return resize_pred(pred, target.shape[-2:], mode), target


class TaskMetric(Metric):
    """Base for the task metrics: sum-reduced states only, so they sync across processes.

    `compute()` returns the task's selected metrics as float32 scalars; a metric with no valid pixel seen
    yet is NaN.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, task: Task, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task_spec = task

    def _add_sum(self, name: str, size: int | None = None, dtype: torch.dtype = torch.float64) -> None:
        # Sums in float64 and counts in int64: a dataset has far more pixels than float32 counts exactly.
        default = torch.zeros(size if size is not None else (), dtype=dtype)
        self.add_state(name, default=default, dist_reduce_fx="sum")

    def compute(self) -> dict[str, Tensor]:
        values = self._compute_all()
        return {m: values[m].float() for m in self.task_spec.metrics}

    @abstractmethod
    def _compute_all(self) -> dict[str, Tensor]: ...


# ------------------------------------------------------------------------------------------------ helpers
def resize_pred(pred: Tensor, size: Sequence[int], mode: str) -> Tensor:
    """Resize a float prediction [N, C, h, w] to `size` ("bilinear" or "nearest")."""
    size = tuple(int(s) for s in size)
    if tuple(pred.shape[-2:]) == size:
        return pred
    if mode == "bilinear":
        return F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(pred, size=size, mode="nearest")


def resize_target(target: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-resize a target ([N, C, H, W] or an integer label map [N, H, W]) to `size`."""
    size = tuple(int(s) for s in size)
    if tuple(target.shape[-2:]) == size:
        return target
    as_4d = target if target.dim() == 4 else target.unsqueeze(1)
    # Integer maps go through float32: label values (< 2**24) survive exactly, and nearest has no int kernel.
    out = F.interpolate(as_4d.float(), size=size, mode="nearest").to(target.dtype)
    return out if target.dim() == 4 else out.squeeze(1)


def masked_sample_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Per-sample weighted mean sum(v * w) / sum(w) over [H, W]; 0 for a sample whose weights sum to 0.

    The denominator is not clamped to 1: class-weighted CE can have a weight sum below 1 legitimately.
    """
    num = (values * weights).sum(dim=(1, 2))
    den = weights.sum(dim=(1, 2))
    return num / torch.where(den > 0, den, torch.ones_like(den))


def bincount(index: Tensor, length: int) -> Tensor:
    """int64 bincount of a 1-D index tensor that also works under deterministic algorithms on CUDA."""
    if index.is_cuda and torch.are_deterministic_algorithms_enabled():
        out = torch.zeros(length, dtype=torch.long, device=index.device)
        return out.index_put_((index,), torch.ones_like(index), accumulate=True)
    return torch.bincount(index, minlength=length)
