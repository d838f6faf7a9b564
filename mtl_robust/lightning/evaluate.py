"""Attack a trained checkpoint from a Hydra config: load, check, clean pass (cached), attacks, rows."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from mtl_robust.attacks.config import attack_from_config, normalized_attack_config
from mtl_robust.evaluation.diagnostics import diagnostics_for_rows
from mtl_robust.evaluation.ensemble_cell import ensemble_cell
from mtl_robust.evaluation.passes import PassResult, cached_pass, run_pass
from mtl_robust.evaluation.per_image import save_stats
from mtl_robust.evaluation.progress import interactive
from mtl_robust.evaluation.runner import Cell, evaluate_cells
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.lightning.datamodule import MultiTaskDataModule
from mtl_robust.lightning.job_failures import full_error_requested, mark_job, one_line_error
from mtl_robust.lightning.module import MultiTaskModule, defense_name, load_module
from mtl_robust.lightning.training import configure_threads, finish_wandb_run
from mtl_robust.lightning.user_model import check_user_outputs, load_user_model, user_model_info
from mtl_robust.models.fingerprint import weights_fingerprint

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def weights_id(module: MultiTaskModule) -> str:
    """Hash of the model spec, the task configs and every state_dict tensor (name, dtype, shape, bytes).

    Unlike a hash of the checkpoint file (which also holds the run directory, optimiser state and
    timestamps), bit-identical retrains get the same id, and so the same cache and row keys.
    """
    spec = {"model_spec": module.hparams.model_spec, "task_configs": module.hparams.task_configs}
    return weights_fingerprint({"config_key": config_key(spec)}, module)


def evaluation_deterministic(module: MultiTaskModule, device: torch.device) -> bool:
    """Whether rerunning reproduces this model's rows bit for bit: its training was (see `runtime_info`)
    and evaluation runs on CPU or with deterministic algorithms enforced on the GPU."""
    trained = bool((module.hparams.get("meta") or {}).get("runtime", {}).get("deterministic", False))
    evaluated = device.type == "cpu" or torch.are_deterministic_algorithms_enabled()
    return trained and evaluated


def check_tasks_match(module: MultiTaskModule, datamodule: MultiTaskDataModule) -> None:
    """A checkpoint only makes sense on data with its own tasks (and the same head sizes)."""
    data_tasks = datamodule.build_tasks()
    if set(data_tasks) != set(module.tasks):
        raise ValueError(
            f"the checkpoint was trained on tasks {sorted(module.tasks)} but data={datamodule.name} provides "
            f"{sorted(data_tasks)}; pick the data config the checkpoint was trained on"
        )
    for name, task in data_tasks.items():
        if task.out_channels != module.tasks[name].out_channels:
            raise ValueError(
                f"task {name!r}: the checkpoint predicts {module.tasks[name].out_channels} channels but "
                f"data={datamodule.name} needs {task.out_channels} (another data set or class count?)"
            )


def model_info(ckpt: Path, module: MultiTaskModule, data: str, split: str, study: str) -> dict[str, Any]:
    """Identity of the evaluated model: the part of a results row that does not depend on the attack."""
    spec = module.hparams.model_spec
    layout = module.model.layout
    layout_spec = spec.get("layout")
    return {
        "study": study,
        "checkpoint": str(ckpt),
        "model_id": weights_id(module),
        "data": data,
        "split": split,
        "tasks": list(module.model.tasks),
        "backbone": spec["backbone"]["name"] if isinstance(spec["backbone"], Mapping) else spec["backbone"],
        "layout": layout.describe(),
        "layout_name": layout_spec if isinstance(layout_spec, str | int) else "explicit",
        "sharing_score": layout.sharing_score(),
        "shared_fraction": layout.shared_fraction,
        "defense": defense_name(module.hparams.get("defense")),
        "train_seed": (module.hparams.get("meta") or {}).get("seed"),
    } | training_fields(module)


def training_fields(module: MultiTaskModule) -> dict[str, Any]:
    """`training`: the checkpoint's training cost (and overfitting-watch verdict), for cost-vs-robustness
    reports. Absent for checkpoints written before it was recorded, so their row keys do not change."""
    record = module.training_record()
    return {"training": record} if record else {}


def batches_factory(datamodule: MultiTaskDataModule, split: str, batch_size: int, max_batches: int | None):
    dataset = datamodule.dataset(split)

    def batches() -> Iterable:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=datamodule.num_workers)
        if max_batches:
            return _Sized(itertools.islice(loader, max_batches), min(max_batches, len(loader)))
        return loader

    return batches


class _Sized:
    """An iterator with a length, so progress bars know the total."""

    def __init__(self, it: Iterable, length: int) -> None:
        self.it, self.length = it, length

    def __iter__(self):
        return iter(self.it)

    def __len__(self) -> int:
        return self.length


def build_cells(
    module: MultiTaskModule, attacks: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | str]]
) -> list[Cell]:
    """Every (attack config, direction) pair built, and so validated, before any model work starts."""
    cells = []
    for attack_cfg, direction_cfg in attacks:
        if attack_cfg.get("method") == "ensemble":  # one cell, one row for all its rules and members
            cells.append(ensemble_cell(attack_cfg, module.tasks))
            continue
        config = normalized_attack_config(attack_cfg, direction_cfg)
        attack = attack_from_config(attack_cfg, direction_cfg)
        if config["direction"].startswith("single:"):
            task = config["direction"].split(":", 1)[1]
            if task not in module.tasks:
                raise ValueError(
                    f"direction single: unknown task {task!r}; the model's tasks are {list(module.tasks)}"
                )
        config["pixel_eps"] = config["eps"] * 255.0
        cells.append(Cell(config=config, attack=attack.with_losses(module.tasks)))
    return cells


def evaluate_checkpoint(
    cfg: DictConfig,
    ckpt: str | Path | None,
    attacks: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | str]],
) -> tuple[list[dict[str, Any]], PassResult, MultiTaskModule]:
    """Clean pass (cached per checkpoint and split), then every attack; returns the rows written."""
    configure_threads(cfg.get("num_threads"))
    for attack_cfg, direction_cfg in attacks:  # bad budgets or steps fail here, before anything is loaded
        attack_from_config(attack_cfg, direction_cfg)
    device = resolve_device(cfg.get("device", "auto"))
    datamodule: MultiTaskDataModule = instantiate(cfg.data)
    split = cfg.get("split", "val")
    user_model = cfg.get("model") if cfg.get("model") and "_target_" in cfg.model else None
    if user_model is not None and ckpt:
        raise ValueError("give either ckpt=<trained .ckpt> or model={_target_: ...}, not both")
    if user_model is not None:  # bring your own model: model._target_ (+ model_weights) instead of a ckpt
        module = load_user_model(cfg, datamodule.build_tasks(), device)
        check_user_outputs(module, datamodule.dataset(split)[0][0][None].to(device))
        info = user_model_info(cfg, module, datamodule.name, split, cfg.get("study", "default"))
        info["deterministic"] = device.type == "cpu" or torch.are_deterministic_algorithms_enabled()
    elif not ckpt:
        raise ValueError("nothing to evaluate: give ckpt=<trained .ckpt> or 'model={_target_: <nn.Module>}'")
    else:
        module = load_module(ckpt, device).to(device)
        check_tasks_match(module, datamodule)
        info = model_info(Path(ckpt), module, datamodule.name, split, cfg.get("study", "default"))
        info["deterministic"] = evaluation_deterministic(module, device)
    cells = build_cells(module, attacks)
    eval_cfg = cfg.get("eval", {})
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    # Which images are evaluated is part of every key: another split size or batch limit is another cell.
    info["data_id"] = config_key(
        {
            "dataset": data_cfg["dataset"],
            "split": data_cfg["splits"].get(split),
            "max_batches": eval_cfg.get("max_batches"),
        }
    )
    batches = batches_factory(
        datamodule,
        split,
        eval_cfg.get("batch_size") or datamodule.eval_batch_size,
        eval_cfg.get("max_batches"),
    )
    progress = bool(eval_cfg.get("progress", True)) and interactive()  # no redrawn bars in log files
    clean_key = config_key({"model_id": info["model_id"], "data_id": info["data_id"]})
    per_image = bool(eval_cfg.get("per_image", False))
    clean_file = Path(cfg.store).parent / "per_image" / f"clean_{clean_key}.npz" if per_image else None

    def clean_pass() -> PassResult:
        return run_pass(
            module.model,
            module.tasks,
            batches(),
            device=device,
            progress=progress,
            desc="clean",
            per_image=per_image,
        )

    clean, hit = cached_pass(Path(cfg.cache_dir) / f"clean_{clean_key}.json", clean_pass)
    if clean_file is not None and (clean.per_image is not None or not clean_file.is_file()):
        # A cached clean pass keeps no per-image statistics: recompute it once when its file is missing.
        save_stats(clean_file, (clean.per_image or clean_pass().per_image), module.tasks)
    log.info("clean pass %s (%d samples)", "reused from cache" if hit else "computed", clean.num_samples)
    diagnostics = diagnostics_for_rows(
        cfg.get("diagnostics"),
        module.model,
        module.tasks,
        batches,
        device,
        Path(cfg.cache_dir),
        {"model_id": info["model_id"], "data_id": info["data_id"]},
    )
    store = ResultsStore(cfg.store)
    examples = int(eval_cfg.get("examples", 0) or 0)
    rows = evaluate_cells(
        module.model,
        module.tasks,
        batches,
        cells,
        store,
        info,
        clean,
        device,
        progress=progress,
        example_dir=Path(cfg.store).parent / "examples" if examples else None,
        example_count=examples,
        continue_on_error=bool(eval_cfg.get("continue_on_error", True)),
        clean_per_image=clean_file,
        row_extras=diagnostics,
    )
    return rows, clean, module


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
            run.summary.update({**metrics, "status": row.get("status"), "error": row.get("error", "")})
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
        cfg.get("method"),
        cfg.get("direction"),
        f"layout={cfg.get('layout_name')}",
        f"defense={cfg.get('defense')}",
        f"eps={cfg.get('pixel_eps', 0):g}/255",
        cfg.get("data"),
        cfg.get("backbone"),
    ]
    return [str(t) for t in tags if t]


def run_name(cfg: Mapping[str, Any]) -> str:
    return (
        f"{cfg.get('layout_name')}-{cfg.get('defense')}-{cfg.get('method')}-{cfg.get('direction')}"
        f"-eps{cfg.get('pixel_eps', 0):g}"
    )


def per_task_table(row: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    res = row["results"]
    data = []
    for task, metrics in res["clean"].items():
        for name, clean in metrics.items():
            data.append([task, name, clean, res["adv"][task][name], res["rel"][task][name]])
    return ["task", "metric", "clean", "adversarial", "relative change"], data


def example_image(row: Mapping[str, Any]) -> Path | None:
    """The row's example grid as a PNG next to its .pt file (drawn by the report's plotting code)."""
    example = row.get("results", {}).get("example")
    if not example or not Path(example).is_file():
        return None
    from mtl_robust.evaluation.plots import plot_example_grid
    from mtl_robust.evaluation.records import Record
    from mtl_robust.evaluation.report import ExampleRef

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
    """`clean/<task>/<metric>`, `adv/<task>/<metric>`, `rel/<task>/<metric>`, `rel/<task>/mean`, `rel/avg`."""
    res = row.get("results", {})
    out: dict[str, float] = {}
    for part in ("clean", "adv", "rel"):
        for task, metrics in (res.get(part) or {}).items():
            for name, value in metrics.items():
                if value is not None:
                    out[f"{part}/{task}/{name}"] = float(value)
    for task, value in (res.get("rel_task") or {}).items():
        if value is not None:
            out[f"rel/{task}/mean"] = float(value)
    for key in ("rel_avg", "rel_loss_avg"):
        if res.get(key) is not None:
            out[key.replace("_avg", "/avg")] = float(res[key])
    return out


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def record_failure(cfg: DictConfig, err: BaseException) -> dict[str, Any]:
    """A job that failed before it could write its own rows: one failed row keyed by the job's overrides,
    so the report shows it and a resumed sweep retries it."""
    import traceback

    overrides = job_overrides()
    config = {
        "study": cfg.get("study", "default"),
        "checkpoint": str(cfg.get("ckpt", "")),
        "overrides": overrides,
    }
    error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=5)}"
    return ResultsStore(cfg.store).append(config_key({"overrides": overrides}), config, {}, "failed", error)


def run_job(cfg: DictConfig, job) -> Any:
    """Run one job of an entry point.

    In a multirun a failure is recorded in the results store (where the config has one) and the sweep goes
    on; a later success of the same job withdraws that failure. A single run that fails ends with one
    message, not a traceback (`HYDRA_FULL_ERROR=1` shows it).
    """
    try:
        result = job(cfg)
    except Exception as err:
        if in_multirun():
            mark_job("failed", f"{' '.join(job_overrides())}\n{type(err).__name__}: {err}")
            if not cfg.get("eval", {}).get("continue_on_error", True):
                raise
            if cfg.get("store"):
                record_failure(cfg, err)
            log.exception("job failed; the sweep goes on")
            return None
        if full_error_requested():
            raise
        raise one_line_error(err) from None
    if in_multirun():
        if cfg.get("store"):
            ResultsStore(cfg.store).resolve_failure(
                config_key({"overrides": job_overrides()}), {"study": cfg.get("study", "default")}
            )
        mark_job("ok")
    return result
