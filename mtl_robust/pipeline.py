"""The main job: train (or reuse) a model, attack it with SINGLE/TOTAL/DGBA, print the comparison."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mtl_robust.config_location import CONFIG_PATH
from mtl_robust.lightning.evaluate import run_job
from mtl_robust.lightning.job_failures import exit_with_sweep_status
from mtl_robust.lightning.pipeline import run_pipeline


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="pipeline")
def hydra_main(cfg: DictConfig) -> None:
    run_job(cfg, run_pipeline)


def main() -> None:
    exit_with_sweep_status(hydra_main)


if __name__ == "__main__":
    main()
