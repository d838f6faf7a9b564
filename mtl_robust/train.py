"""Train a multi-task model: `python -m mtl_robust.train [data=...] [backbone=...] [sharing=...] ...`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mtl_robust.config_location import CONFIG_PATH
from mtl_robust.lightning.evaluate import run_job
from mtl_robust.lightning.job_failures import exit_with_sweep_status
from mtl_robust.lightning.training import format_metrics, train


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
