"""Experiment loggers of the jobs: a wandb run per training job and per attack cell, tagged with the axes
studies sweep (layout, defense, method, direction, eps)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from mtl_robust.values.budget import format_pixels
from mtl_robust.values.norm import method_label

# Relative changes are fractions in the results store (-0.12); what a person reads, the terminal tables, the
# reports and the wandb dashboard, shows them in percent (-12.0).
PERCENT = 100.0


class WandbRunLogger(WandbLogger):
    """Lightning's wandb logger as the jobs use it: `WANDB_DIR`, when set, is where runs are written (wandb's
    own convention; the config's `save_dir`, the job's folder, otherwise), and no deprecated settings are
    passed to wandb (Lightning always sends `anonymous`, which wandb warns about on every run)."""

    def __init__(self, *args: Any, save_dir: str | None = None, **kwargs: Any) -> None:
        save_dir = os.environ.get("WANDB_DIR") or save_dir
        super().__init__(*args, save_dir=save_dir or ".", **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def build_logger(cfg: DictConfig | None, run_cfg: DictConfig | None = None) -> Any:
    """The experiment logger; a wandb run is a `train` job tagged with what was trained."""
    if not cfg or "_target_" not in cfg:
        return False
    if "Wandb" not in cfg._target_ or run_cfg is None:
        return instantiate(cfg)
    finish_wandb_run()  # never log into a run left open by earlier work in this process
    return instantiate(
        cfg,
        job_type="train",
        name=cfg.get("name") or training_run_name(run_cfg),
        tags=[*cfg.get("tags", []), *training_tags(run_cfg)],
    )


def training_run_name(cfg: DictConfig) -> str:
    """A training run's name on the dashboard, like an attack run's: `<layout>-<defense>-train[-seed<n>]`."""
    model = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else {}
    layout = model.get("layout")
    layout = layout if isinstance(layout, str | int) else "explicit"
    defense = (cfg.get("defense") or {}).get("name", "none")
    seed = cfg.get("seed")
    return f"{layout}-{defense}-train" + (f"-seed{seed}" if seed else "")


def training_tags(cfg: DictConfig) -> list[str]:
    """wandb tags of a training run: layout, defense, data and backbone (the axes studies sweep)."""
    model = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else {}
    layout = model.get("layout")
    backbone = model.get("backbone")
    tags = [
        f"layout={layout}" if isinstance(layout, str | int) else "layout=explicit",
        f"defense={(cfg.get('defense') or {}).get('name', 'none')}",
        (cfg.get("data") or {}).get("name"),
        backbone.get("name") if isinstance(backbone, Mapping) else backbone,
    ]
    return [str(t) for t in tags if t]


def finish_wandb_run() -> None:
    """End the process's active wandb run (if wandb is in use), so the next job starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def log_rows(logger_cfg: DictConfig | None, rows: Sequence[Mapping[str, Any]], study: str) -> None:
    """Send rows to the configured experiment logger, one run per cell.

    wandb: runs grouped by study and tagged with their axes; metrics as summaries; a per-task table and the
    example grid (image, perturbation, predictions) logged too. Offline mode works and syncs later.
    """
    if not logger_cfg or "_target_" not in logger_cfg:
        return
    is_wandb = "Wandb" in logger_cfg._target_
    if is_wandb:
        finish_wandb_run()  # e.g. the training run of this pipeline: each cell gets its own run
    for row in rows:
        cfg = row["config"]
        extra = {}
        if is_wandb:
            extra = {
                "group": study,
                "tags": run_tags(cfg),
                "reinit": "finish_previous",
                "name": run_name(cfg),
                "job_type": "attack",
            }
        logger = instantiate(logger_cfg, **extra)
        logger.log_hyperparams(dict(cfg))
        metrics = flat_metrics(row)
        if metrics:
            logger.log_metrics(metrics, step=0)
        if is_wandb:
            run = logger.experiment
            run.summary.update(
                {**metrics, "rel_unit": "percent", "status": row.get("status"), "error": row.get("error", "")}
            )
            if row.get("status") == "ok":
                columns, data = per_task_table(row)
                logger.log_table(key="per_task", columns=columns, data=data)
                image = example_image(row)
                if image is not None:
                    logger.log_image(key="example", images=[str(image)])
            run.finish()
        else:
            logger.finalize("success")


def run_tags(cfg: Mapping[str, Any]) -> list[str]:
    tags = [
        method_label(str(cfg.get("method")), cfg.get("norm")) if cfg.get("method") else None,
        cfg.get("direction"),
        f"layout={cfg.get('layout_name')}",
        f"defense={cfg.get('defense')}",
        f"eps={format_pixels(cfg.get('eps', 0), norm=cfg.get('norm'))}",
        cfg.get("data"),
        cfg.get("backbone"),
    ]
    return [str(t) for t in tags if t]


def run_name(cfg: Mapping[str, Any]) -> str:
    method = method_label(str(cfg.get("method")), cfg.get("norm"))
    eps = format_pixels(cfg.get("eps", 0), norm=cfg.get("norm")).split("/")[0]
    return f"{cfg.get('layout_name')}-{cfg.get('defense')}-{method}-{cfg.get('direction')}-eps{eps}"


def per_task_table(row: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    res = row["results"]
    data = []
    for task, metrics in res["clean"].items():
        for name, clean in metrics.items():
            rel = res["rel"][task][name]
            data.append([task, name, clean, res["adv"][task][name], None if rel is None else rel * PERCENT])
    return ["task", "metric", "clean", "adversarial", "relative change (%)"], data


def example_image(row: Mapping[str, Any]) -> Path | None:
    """The row's example grid as a PNG next to its .pt file (drawn by the report's plotting code)."""
    example = row.get("results", {}).get("example")
    if not example or not Path(example).is_file():
        return None
    from mtl_robust.report.examples import ExampleRef
    from mtl_robust.report.figures import plot_example_grid
    from mtl_robust.report.records import Record

    record = Record(
        store="",
        key=row["key"],
        status=row["status"],
        time=row.get("time", 0.0),
        config=row["config"],
        results=row["results"],
        error="",
        base_dir=Path(example).parent,
    )
    ref = ExampleRef(record=record, path=Path(example), title=run_name(row["config"]))
    return plot_example_grid(ref, Path(example).with_suffix(".png"))


def flat_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """`clean/<task>/<metric>`, `adv/<task>/<metric>`, `rel/<task>/<metric>`, `rel/<task>/mean`, `rel/avg`;
    the relative changes (`rel/...`) in percent, as the terminal and the reports show them."""
    res = row.get("results", {})
    out: dict[str, float] = {}
    for part in ("clean", "adv", "rel"):
        scale = PERCENT if part == "rel" else 1.0
        for task, metrics in (res.get(part) or {}).items():
            for name, value in metrics.items():
                if value is not None:
                    out[f"{part}/{task}/{name}"] = float(value) * scale
    for task, value in (res.get("rel_task") or {}).items():
        if value is not None:
            out[f"rel/{task}/mean"] = float(value) * PERCENT
    for key in ("rel_avg", "rel_loss_avg"):
        if res.get(key) is not None:
            out[key.replace("_avg", "/avg")] = float(res[key]) * PERCENT
    return out
