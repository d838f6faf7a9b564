"""The main job: train (or reuse) a model, attack it with SINGLE/TOTAL/DGBA, print the comparison."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mtl_robust.lightning.evaluate import run_job
from mtl_robust.lightning.pipeline import run_pipeline


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_pipeline)


if __name__ == "__main__":
    main()
