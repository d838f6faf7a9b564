"""Attack a checkpoint: `python -m mtl_robust.attack ckpt=... attack=pgd direction=dgba attack.eps=8/255`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from mtl_robust.config_location import CONFIG_PATH
from mtl_robust.evaluation.runner import format_rows
from mtl_robust.lightning.evaluate import evaluate_checkpoint, log_rows, run_job
from mtl_robust.lightning.job_failures import exit_with_sweep_status


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="attack")
def hydra_main(cfg: DictConfig) -> float | None:
    return run_job(cfg, attack_job)


def attack_job(cfg: DictConfig) -> float:
    attack = OmegaConf.to_container(cfg.attack, resolve=True)
    direction = OmegaConf.to_container(cfg.direction, resolve=True)
    rows, _, module = evaluate_checkpoint(cfg, cfg.ckpt, [(attack, direction)])
    log_rows(cfg.get("logger"), rows, cfg.study)
    layout = getattr(module.model, "layout", None)  # a user model (model._target_) has none
    if layout is not None:
        print(f"\nlayout: {layout.describe()}   (relative change in %, negative = worse)")
    else:
        print(f"\nmodel: {type(module.model.model).__name__}   (relative change in %, negative = worse)")
    print(format_rows(rows, module.model.tasks))
    print(f"results: {cfg.store}")
    result = rows[0].get("results", {}).get("rel_avg")
    return float(result) if result is not None else float("nan")


def main() -> None:
    exit_with_sweep_status(hydra_main)


if __name__ == "__main__":
    main()
