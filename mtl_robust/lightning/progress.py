"""Training progress a log file can carry: one plain line per epoch, or per ~30 s when epochs are quicker.

    train epoch 5/20: loss 0.8123; val loss 0.7710, seg miou 0.312, depth abs_err 0.5; elapsed 41s, ETA 2m44s

Lightning's bar redraws with carriage returns and is kept for terminals; in a non-TTY the training job turns
it off and adds this callback instead (`jobs/train.py`). Lines go to stderr, so stdout keeps the results.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import pytorch_lightning as pl

from mtl_robust.evaluation.progress import format_seconds, job_prefix


class EpochLines(pl.Callback):
    """Prints an epoch's line when at least `min_interval` seconds passed since the last one (the first and
    the last epoch always print); validation metrics appear on the epochs that computed them."""

    def __init__(self, min_interval: float = 30.0, stream: TextIO | None = None) -> None:
        self.min_interval, self.stream = float(min_interval), stream
        self.started = self.last_line = 0.0
        self.validated = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()
        self.last_line = -math.inf

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        last = total is not None and total > 0 and epoch >= total
        validated, self.validated = self.validated, False
        if not (last or epoch == 1 or now - self.last_line >= self.min_interval):
            return
        self.last_line = now
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1
        }
        line = epoch_line(
            epoch, total, metrics, getattr(pl_module, "tasks", {}), validated, now - self.started
        )
        print(f"{job_prefix()}{line}", file=self.stream or sys.stderr, flush=True)


def epoch_line(
    epoch: int,
    total: int | None,
    metrics: dict[str, float],
    tasks: dict[str, Any],
    validated: bool,
    elapsed: float,
) -> str:
    """`train epoch i/N: loss ...; val loss ..., <task> <first metric> ...; elapsed ..., ETA ...`."""
    parts = [f"train epoch {epoch}/{total if total and total > 0 else '?'}:"]
    loss = metrics.get("train/loss_epoch", metrics.get("train/loss"))
    parts.append(f"loss {loss:.4f}" if loss is not None else "loss ?")
    if validated and "val/loss" in metrics:
        shown = [f"val loss {metrics['val/loss']:.4f}"]
        for name, task in tasks.items():  # each task's headline metric (its first)
            first = next(iter(getattr(task, "higher_is_better", {}) or {}), None)
            if first is not None and f"val/{name}/{first}" in metrics:
                shown.append(f"{name} {first} {metrics[f'val/{name}/{first}']:.4g}")
        parts[-1] += ";"
        parts.append(", ".join(shown))
    eta = elapsed / epoch * (total - epoch) if total and total > 0 else math.nan
    parts[-1] += ";"
    parts.append(f"elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)}")
    return " ".join(parts)
