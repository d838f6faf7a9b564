"""Training step time: the Lightning module vs a plain PyTorch loop on the same model and batch.

Both sides run the same forward, per-task losses, backward, Adam step and StepLR step on one fixed batch;
the Lightning side is timed from the first to the last timed batch through a callback, so it includes the
loop's own overhead (logging, hooks) but not Trainer start-up. Repeats are interleaved; medians reported.

    python experiments/benchmarks/bench_training.py [--batch-size 32] [--size 64] [--steps 60]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mtl_robust.data.synthetic import SyntheticScenes
from mtl_robust.lightning.module import MultiTaskModule
from mtl_robust.tasks import build_task


class RepeatBatch(Dataset):
    """The same batch over and over, so data loading costs nothing on either side."""

    def __init__(self, batch, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.batch


class StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.count = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.end, self.count = time.perf_counter(), self.count + 1


def make_module(num_classes: int) -> MultiTaskModule:
    tasks = {
        "seg": build_task("seg", num_classes=num_classes),
        "normal": build_task("normal"),
        "depth": build_task("depth"),
    }
    spec = {
        "backbone": {"name": "small_resnet"},
        "head": {"name": "light"},
        "layout": "all_shared",
        "tasks": {t: task.out_channels for t, task in tasks.items()},
        "seed": 0,
    }
    return MultiTaskModule(
        spec,
        {t: task.config() for t, task in tasks.items()},
        scheduler={"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 400, "gamma": 0.5},
    )


def lightning_time(batch, steps: int, warmup: int, num_classes: int) -> float:
    module = make_module(num_classes)
    timer = StepTimer(warmup)
    loader = DataLoader(RepeatBatch(batch, steps + warmup), batch_size=None)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        callbacks=[timer],
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    return (timer.end - timer.start) / timer.count


def plain_time(batch, steps: int, warmup: int, num_classes: int) -> float:
    module = make_module(num_classes)
    model, tasks = module.model.train(), module.tasks
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=400, gamma=0.5)
    x, targets = batch
    for i in range(steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        preds = model(x)
        loss = sum(task.loss(preds[t], targets[t]).mean() for t, task in tasks.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    data = SyntheticScenes(num_images=args.batch_size, height=args.size, width=args.size, split="train")
    batch = torch.utils.data.default_collate([data[i] for i in range(args.batch_size)])
    light, plain = [], []
    for _ in range(args.repeats):
        light.append(lightning_time(batch, args.steps, args.warmup, data.num_classes))
        plain.append(plain_time(batch, args.steps, args.warmup, data.num_classes))
    lt, pt = statistics.median(light), statistics.median(plain)
    print(
        f"\nmodel: small_resnet all_shared, 3 tasks; batch {args.batch_size}x3x{args.size}x{args.size}; "
        f"1 torch thread; {args.steps} timed steps x {args.repeats} repeats (medians)"
    )
    print(f"plain PyTorch step: {1000 * pt:8.2f} ms")
    print(f"Lightning step:     {1000 * lt:8.2f} ms")
    print(f"ratio Lightning / plain: {lt / pt:.3f}")


if __name__ == "__main__":
    main()
