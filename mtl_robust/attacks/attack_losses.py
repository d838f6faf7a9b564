"""Pluggable per-task attack losses (the third attack axis), docs/method.md *Per-task attack losses*.

An attack loss has the signature of a task's training loss, `(pred, target) -> Tensor[N]` (per-sample mean
over that sample's valid pixels, 0 where none is valid), so any training loss is an attack loss. Losses
that need the iteration index subclass `StepAwareLoss`: the attack then calls them as
`loss(pred, target, step=k, total_steps=K)`, where `k` counts gradient evaluations from 0 (the first step)
to K - 1. Values at different steps are values of different objectives, so a step-aware loss also has a
step-independent `judge(pred, target)` form: what APGD keeps its best iterate and adapts its step by, what
histories record and what a direction's clean-loss state is read from (docs/method.md *Judging iterates*).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def _resize_to(pred: Tensor, size: tuple[int, ...]) -> Tensor:
    """Bilinear resize of a prediction to the target size (the task specs' default resolution rule)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=False)


def _sample_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Per-sample mean of `values` [N, H, W] over `valid` pixels; 0 for a sample without valid pixels."""
    weights = valid.to(values.dtype)
    total = (torch.where(valid, values, torch.zeros_like(values)) * weights).flatten(1).sum(1)
    return total / weights.flatten(1).sum(1).clamp_min(1.0)


class StepAwareLoss(ABC):
    """Base of attack losses that change with the iteration index."""

    step_aware: ClassVar[bool] = True

    @abstractmethod
    def __call__(self, pred: Tensor, target: Tensor, *, step: int = 0, total_steps: int = 1) -> Tensor:
        """Per-sample loss [N] at attack iteration `step` of `total_steps`."""

    @abstractmethod
    def judge(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss [N] that does not depend on the step: iterates are compared by it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _seg_inputs(pred: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    if pred.dim() != 4 or target.dim() != 3 or pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"segmentation attack loss expects logits [N, C, h, w] and labels [N, H, W], "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    pred = _resize_to(pred.float(), target.shape[-2:])
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    return pred, valid, safe_target


class SegPGDLoss(StepAwareLoss):
    """SegPGD (Gu et al. 2022): (1 - lambda_k) CE on correctly classified pixels + lambda_k CE on wrong ones.

    lambda_k = k / (2K): the first step pushes only still-correct pixels, later steps spread effort to the
    already-wrong ones. Per-sample mean over non-ignored pixels.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = int(ignore_index)

    @staticmethod
    def weight(step: int, total_steps: int) -> float:
        """lambda_k = k / (2K), the weight of wrongly classified pixels."""
        if total_steps < 1 or step < 0:
            raise ValueError(
                f"need 0 <= step and total_steps >= 1, got step={step}, total_steps={total_steps}"
            )
        return step / (2.0 * total_steps)

    def __call__(self, pred: Tensor, target: Tensor, *, step: int = 0, total_steps: int = 1) -> Tensor:
        pred, valid, safe_target = _seg_inputs(pred, target, self.ignore_index)
        lam = self.weight(step, total_steps)
        ce = F.cross_entropy(pred, safe_target, reduction="none")
        correct = pred.detach().argmax(dim=1) == safe_target
        pixel_weight = torch.where(correct, torch.full_like(ce, 1.0 - lam), torch.full_like(ce, lam))
        return _sample_mean(pixel_weight * ce, valid)

    def judge(self, pred: Tensor, target: Tensor) -> Tensor:
        """Plain per-pixel CE, the loss SegPGD reweights: every step's weighting is a split of it, so
        iterates compare by how much CE they caused, whatever lambda_k shaped their ascent."""
        pred, valid, safe_target = _seg_inputs(pred, target, self.ignore_index)
        return _sample_mean(F.cross_entropy(pred, safe_target, reduction="none"), valid)

    def __repr__(self) -> str:
        return f"SegPGDLoss(ignore_index={self.ignore_index})"


class CosPGDLoss:
    """CosPGD (Agnihotri et al.) for segmentation: per-pixel CE times the detached cosine similarity between
    the predicted distribution and the one-hot label, so pixels that are still right weigh more.

    `activation` is "softmax" (the CosPGD paper) or "sigmoid" (its code, torchattacks). Not step dependent.
    """

    step_aware: ClassVar[bool] = False

    def __init__(self, ignore_index: int = IGNORE_INDEX, activation: str = "softmax") -> None:
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
        self.ignore_index = int(ignore_index)
        self.activation = activation

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, valid, safe_target = _seg_inputs(pred, target, self.ignore_index)
        ce = F.cross_entropy(pred, safe_target, reduction="none")
        with torch.no_grad():
            probs = pred.softmax(dim=1) if self.activation == "softmax" else pred.sigmoid()
            one_hot = F.one_hot(safe_target, num_classes=pred.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
            cos = F.cosine_similarity(probs, one_hot, dim=1)
        return _sample_mean(cos * ce, valid)

    def __repr__(self) -> str:
        return f"CosPGDLoss(ignore_index={self.ignore_index}, activation={self.activation!r})"


def _nonzero_valid(target: Tensor) -> Tensor:
    """Default validity of dense regression targets: depth 0 and all-zero normals are invalid."""
    return (target != 0).any(dim=1)


class CosPGDL1Loss:
    """CosPGD for regression: per-pixel L1 (mean over channels) times the detached cosine similarity between
    softmax(pred) and softmax(target) over channels, as in the official code.

    With one channel (depth) both softmaxes are 1, so the weight is 1 and this is plain masked L1.
    `valid_mask(target) -> Bool[N, H, W]` defaults to "target not all zero" (pass `task.valid_mask`).
    """

    step_aware: ClassVar[bool] = False

    def __init__(self, valid_mask: Callable[[Tensor], Tensor] | None = None) -> None:
        self.valid_mask = valid_mask or _nonzero_valid

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.dim() != 4 or target.dim() != 4 or pred.shape[:2] != target.shape[:2]:
            raise ValueError(
                f"regression attack loss expects pred and target [N, C, H, W] with equal N and C, "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        pred = _resize_to(pred.float(), target.shape[-2:])
        target = target.float()
        valid = self.valid_mask(target)
        l1 = (pred - target).abs().mean(dim=1)
        with torch.no_grad():
            cos = F.cosine_similarity(pred.softmax(dim=1), target.softmax(dim=1), dim=1)
        return _sample_mean(cos * l1, valid)

    def __repr__(self) -> str:
        return "CosPGDL1Loss()"


ATTACK_LOSSES: dict[str, Callable[..., Any]] = {
    "segpgd": SegPGDLoss,
    "cospgd": CosPGDLoss,
    "cospgd_l1": CosPGDL1Loss,
}


def build_attack_loss(name: str, **kwargs: Any) -> Callable[..., Tensor]:
    """An attack loss by name: "segpgd", "cospgd" (segmentation), "cospgd_l1" (regression)."""
    if name not in ATTACK_LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; choose one of {sorted(ATTACK_LOSSES)}")
    return ATTACK_LOSSES[name](**kwargs)
