"""Clean and adversarial evaluation passes: per-task metrics and mean per-sample losses over a data split."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.evaluation.per_image import Stats, concat_stats, per_image_stats
from mtl_robust.tasks import Task

Batch = tuple[Tensor, dict[str, Tensor]]
AttackFn = Callable[[nn.Module, Tensor, dict[str, Tensor]], Tensor]


@dataclass
class PassResult:
    metrics: dict[str, dict[str, float]]
    losses: dict[str, float]
    num_samples: int
    example: dict[str, Any] | None = field(default=None, repr=False)
    per_image: Stats | None = field(default=None, repr=False)  # see evaluation/per_image.py

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("example", "per_image")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PassResult:
        return cls(metrics=data["metrics"], losses=data["losses"], num_samples=data["num_samples"])


def _to_device(batch: Batch, device: torch.device) -> Batch:
    x, targets = batch
    return x.to(device), {t: v.to(device) for t, v in targets.items()}


def run_pass(
    model: nn.Module,
    tasks: Mapping[str, Task],
    batches: Iterable[Batch],
    attack: AttackFn | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "clean",
    keep_example: bool = False,
    per_image: bool = False,
) -> PassResult:
    """Metrics of every task on clean inputs, or on `attack(model, x, targets)` when an attack is given.

    A task's loss is the mean over samples of the per-sample loss, counting only samples that have at least
    one valid pixel for that task. With `per_image`, the result also holds every image's metric statistics
    (in data order), from which the metrics of any subset of images can be recomputed.
    """
    device = torch.device(device)
    metrics = {t: task.metric().to(device) for t, task in tasks.items()}
    loss_sum = {t: 0.0 for t in tasks}
    loss_count = {t: 0 for t in tasks}
    num_samples = 0
    example = None
    stats_parts: list[Stats] = []
    with eval_mode(model):
        total = len(batches) if hasattr(batches, "__len__") else None
        for index, batch in enumerate(
            tqdm(batches, desc=desc, total=total, disable=not progress, leave=False)
        ):
            x, targets = _to_device(batch, device)
            if not torch.isfinite(x).all():
                raise ValueError(
                    f"batch {index} of the evaluation data holds NaN or inf pixels; fix the data "
                    "(inputs must be finite RGB in [0, 1])"
                )
            x_eval = attack(model, x, targets) if attack is not None else x
            with torch.no_grad():
                preds = model(x_eval)
                for t, task in tasks.items():
                    per_sample = task.loss(preds[t], targets[t])
                    has_valid = task.valid_count(targets[t]) > 0
                    loss_sum[t] += float(per_sample[has_valid].sum())
                    loss_count[t] += int(has_valid.sum())
                    metrics[t].update(preds[t], targets[t])
                if per_image:
                    stats_parts.append(
                        {t: per_image_stats(task, preds[t], targets[t]) for t, task in tasks.items()}
                    )
            if keep_example and example is None:
                example = {
                    "x": x.cpu(),
                    "x_eval": x_eval.detach().cpu(),
                    "preds": {t: p.cpu() for t, p in preds.items()},
                    "targets": {t: v.cpu() for t, v in targets.items()},
                }
            num_samples += x.shape[0]
    values = {t: {k: float(v) for k, v in m.compute().items()} for t, m in metrics.items()}
    losses = {t: loss_sum[t] / loss_count[t] if loss_count[t] else float("nan") for t in tasks}
    stats = concat_stats(stats_parts) if per_image else None
    return PassResult(
        metrics=values, losses=losses, num_samples=num_samples, example=example, per_image=stats
    )


def cached_pass(cache_file: Path, compute: Callable[[], PassResult]) -> tuple[PassResult, bool]:
    """Reuse a stored pass result (e.g. the clean pass of a checkpoint on a split); returns (result, hit)."""
    if cache_file.exists():
        return PassResult.from_json(json.loads(cache_file.read_text())), True
    result = compute()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2))
    tmp.replace(cache_file)
    return result, False
