"""Lightning DataModule over any multi-task dataset of the project (synthetic, NYUv2, Taskonomy).

The dataset class comes in as a partial (Hydra `_partial_: true`) holding the arguments common to all splits;
`splits` holds what differs per split. That keeps one config per data set instead of one per split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mtl_robust.tasks import Task, build_tasks

STAGES = ("train", "val", "test")


class MultiTaskDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset: Callable[..., Dataset],
        splits: Mapping[str, Mapping[str, Any]],
        tasks: Sequence[str],
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        task_options: Mapping[str, Mapping[str, Any]] | None = None,
        pin_memory: bool = False,
        name: str = "dataset",
        root: str | None = None,
    ) -> None:
        super().__init__()
        unknown = set(splits) - set(STAGES)
        if unknown:
            raise ValueError(
                f"data.splits has unknown stages {sorted(unknown)}; expected a subset of {STAGES}"
            )
        if "train" not in splits or "val" not in splits:
            raise ValueError("data.splits needs at least a 'train' and a 'val' entry")
        self.dataset_factory = dataset
        self.splits = {k: dict(v or {}) for k, v in splits.items()}
        self.task_names = tuple(tasks)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.task_options = {k: dict(v or {}) for k, v in (task_options or {}).items()}
        self.pin_memory = pin_memory
        self.name = name
        self.root = root  # the configs interpolate it into the dataset arguments; kept for reports
        self._datasets: dict[str, Dataset] = {}

    def dataset(self, stage: str) -> Dataset:
        """The dataset of one split, built on first use (readers check their root here, before training)."""
        if stage not in self.splits:
            raise ValueError(f"no split configured for stage {stage!r}; configured: {sorted(self.splits)}")
        if stage not in self._datasets:
            self._datasets[stage] = self.dataset_factory(**self.splits[stage])
        return self._datasets[stage]

    def build_tasks(self) -> dict[str, Task]:
        """Task specs for the configured tasks, with what only the data knows (classes, class weights)."""
        reference = self.dataset("val")
        unknown = set(self.task_options) - set(self.task_names)
        if unknown:
            raise ValueError(
                f"data.task_options names tasks {sorted(unknown)} not in data.tasks {self.task_names}"
            )
        missing = [t for t in self.task_names if t not in getattr(reference, "tasks", self.task_names)]
        if missing:
            raise ValueError(f"{type(reference).__name__} does not provide tasks {missing}")
        # What the data knows goes to every task that accepts it (today only "seg" takes classes and weights).
        data_options: dict[str, Any] = {}
        if getattr(reference, "num_classes", None) is not None:
            data_options["num_classes"] = reference.num_classes
        weights = getattr(reference, "class_weights", None)
        if weights is not None:
            data_options["class_weights"] = torch.as_tensor(weights, dtype=torch.float32).tolist()
        return build_tasks(self.task_names, task_kwargs=self.task_options, **data_options)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", ())
        for split in wanted:
            if split in self.splits:
                self.dataset(split)

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(stage),
            batch_size=self.batch_size if stage == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=stage == "train",
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.splits else "val", shuffle=False)
