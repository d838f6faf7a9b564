"""The training job: compose datamodule, model, logger and trainer from a Hydra config, train, and report
clean metrics. `python -m mtl_robust.train [data=...] [backbone=...] [sharing=...] ...`."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mtl_robust.config_location import CONFIG_PATH
from mtl_robust.evaluation.progress import interactive
from mtl_robust.files import atomic_write_text
from mtl_robust.jobs.failures import exit_with_sweep_status
from mtl_robust.jobs.loggers import build_logger, finish_wandb_run
from mtl_robust.jobs.recipe import training_recipe
from mtl_robust.jobs.runner import configure_threads, run_job, runtime_info, training_threads
from mtl_robust.lightning.checkpoints import AtomicCheckpointIO
from mtl_robust.lightning.datamodule import MultiTaskDataModule
from mtl_robust.lightning.fast_at import training_epochs
from mtl_robust.lightning.module import MultiTaskModule
from mtl_robust.lightning.progress import EpochLines
from mtl_robust.values.training import DEFAULT_MTL

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    checkpoint: Path
    metrics: dict[str, float]
    module: MultiTaskModule
    is_global_zero: bool = True


def trained_images(cfg: DictConfig) -> dict[str, Any]:
    """What the model was trained and validated on, kept in the checkpoint so that an attack on other images
    (another resolution, another split size) can say so: the image size, the split sizes, the experiment."""
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    dataset = data.get("dataset") or {}
    splits = data.get("splits") or {}
    experiment = None
    if HydraConfig.initialized():
        experiment = HydraConfig.get().runtime.choices.get("experiment")
    return {
        "height": dataset.get("height"),
        "width": dataset.get("width"),
        "num_images": {k: (v or {}).get("num_images") for k, v in splits.items() if isinstance(v, dict)},
        "experiment": experiment,
    }


def mtl_config(cfg: DictConfig) -> dict[str, Any] | None:
    """The `mtl` group's config; None for `ew`, so its hyper-parameters are those of before the group."""
    mtl = OmegaConf.to_container(cfg.mtl, resolve=True) if cfg.get("mtl") else None
    return None if not mtl or mtl.get("name", DEFAULT_MTL) == DEFAULT_MTL else mtl


def build_module(cfg: DictConfig, datamodule: MultiTaskDataModule) -> MultiTaskModule:
    tasks = datamodule.build_tasks()
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_spec = {**model_cfg, "tasks": {name: task.out_channels for name, task in tasks.items()}}
    train_cfg = OmegaConf.to_container(cfg.train, resolve=True)
    return MultiTaskModule(
        model_spec=model_spec,
        task_configs={name: task.config() for name, task in tasks.items()},
        loss_weights=train_cfg.get("loss_weights"),
        optimizer=train_cfg["optimizer"],
        scheduler=train_cfg.get("scheduler"),
        scheduler_interval=train_cfg.get("scheduler_interval", "step"),
        defense=OmegaConf.to_container(cfg.defense, resolve=True) if cfg.get("defense") else None,
        mtl=mtl_config(cfg),
        meta={
            "data": datamodule.name,
            "task_name": cfg.get("task_name"),
            "seed": cfg.get("seed"),
            "runtime": runtime_info(cfg),
            "recipe": training_recipe(cfg).to_row(),
            "images": trained_images(cfg),
        },
    )


def train(cfg: DictConfig) -> TrainingResult:
    configure_threads(training_threads(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: MultiTaskDataModule = instantiate(cfg.data, _recursive_=True)
    module = build_module(cfg, datamodule)
    log.info("layout: %s", module.model.layout.describe())
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    # Lightning's bar redraws with carriage returns on stdout: only on a terminal, never into a log file,
    # which gets one line per epoch (or per ~30 s) instead.
    no_bar = {} if interactive(sys.stdout) else {"enable_progress_bar": False}
    if no_bar:
        callbacks.append(EpochLines())
    # Free AT replays each batch: fewer epochs for the same number of optimiser steps (fast_at.py).
    epochs = training_epochs(module.defense, cfg.trainer.get("max_epochs"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=build_logger(cfg.get("logger"), cfg),
        callbacks=callbacks,
        max_epochs=epochs,
        plugins=[*(instantiate(p) for p in cfg.trainer.get("plugins") or []), AtomicCheckpointIO()],
        **no_bar,
    )
    trainer.fit(module, datamodule=datamodule)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if trainer.is_global_zero and not checkpoint.exists():
        trainer.save_checkpoint(checkpoint)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir) / "metrics.json"
        atomic_write_text(out, json.dumps({"checkpoint": str(checkpoint), "val": metrics}, indent=2))
    finish_wandb_run()  # the training run ends here: attack cells get runs of their own
    return TrainingResult(checkpoint, metrics, module, trainer.is_global_zero)


def format_metrics(metrics: dict[str, float], tasks: dict[str, Any]) -> str:
    """`val/<task>/<metric>` values as one aligned table, with each metric's direction."""
    lines = [f"{'task':<10} {'metric':<14} {'value':>10}"]
    for task_name, task in tasks.items():
        for name, higher in task.higher_is_better.items():
            key = f"val/{task_name}/{name}"
            if key in metrics:
                arrow = "higher=better" if higher else "lower=better"
                lines.append(f"{task_name:<10} {name:<14} {metrics[key]:>10.4f}  ({arrow})")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return run_job(cfg, train_job)


def train_job(cfg: DictConfig) -> float:
    result = train(cfg)
    if not result.is_global_zero:  # under DDP every rank runs this; one report is enough
        return result.metrics.get("val/loss", float("nan"))
    print(f"\nlayout: {result.module.model.layout.describe()}")
    print(format_metrics(result.metrics, result.module.tasks))
    print(f"checkpoint: {result.checkpoint}")
    return result.metrics.get("val/loss", float("nan"))


def main() -> None:
    exit_with_sweep_status(hydra_main)


if __name__ == "__main__":
    main()
