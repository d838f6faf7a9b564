"""The attack job: load a trained checkpoint (or a user model), check it against the data, clean pass
(cached), every attack cell, rows into the store. `python -m mtl_robust.attack ckpt=... attack=pgd
direction=dgba attack.eps=8/255`."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from mtl_robust.attacks.base import Attack
from mtl_robust.attacks.bpda import check_bpda, parse_bpda, with_bpda
from mtl_robust.attacks.config import AttackSpec, DirectionConfig, attack_spec
from mtl_robust.attacks.precision import DEFAULT_PRECISION, parse_precision, with_precision
from mtl_robust.attacks.weighted_direction import Weighted
from mtl_robust.config_location import CONFIG_PATH
from mtl_robust.evaluation.diagnostics import diagnostics_for_rows
from mtl_robust.evaluation.ensemble_cell import ensemble_cell
from mtl_robust.evaluation.passes import PassResult, cached_pass, run_pass
from mtl_robust.evaluation.per_image import save_stats
from mtl_robust.evaluation.progress import interactive
from mtl_robust.evaluation.runner import Cell, evaluate_cells, format_rows, precision_key
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.evaluation.trivial_baseline import baseline_for_rows
from mtl_robust.jobs.failures import check_cells, exit_with_sweep_status
from mtl_robust.jobs.loggers import log_rows
from mtl_robust.jobs.runner import configure_threads, run_job
from mtl_robust.jobs.surrogate import (
    CheckpointResolver,
    Surrogate,
    crafted_on,
    load_surrogate,
    surrogate_path,
)
from mtl_robust.jobs.terminal_flags import flag_lines
from mtl_robust.lightning.datamodule import MultiTaskDataModule
from mtl_robust.lightning.module import MultiTaskModule, load_module
from mtl_robust.lightning.user_model import (
    check_user_outputs,
    is_user_model,
    load_user_model,
    user_model_info,
)
from mtl_robust.models.fingerprint import weights_fingerprint
from mtl_robust.mtl.attack_weights import training_weights
from mtl_robust.values.recipe import TrainingRecipe

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


def check_sizes_and_seed(cfg: DictConfig) -> None:
    """Refuse, before any model work, sizes and seeds that would silently mean something else: a zero batch
    size or batch limit is not "the default" or "all" (leave them out, or null, for that), a seed is >= 0."""
    eval_cfg = cfg.get("eval") or {}
    for key in ("batch_size", "max_batches"):
        value = eval_cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            meaning = "the data's eval batch size" if key == "batch_size" else "every batch"
            raise ValueError(f"eval.{key} must be a positive int (or null: {meaning}), got {value!r}")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def other_images(module: MultiTaskModule, cfg: DictConfig, split: str) -> str | None:
    """How the evaluated images differ from those the checkpoint was trained on (None: alike, or unknown for
    checkpoints that did not record them), with the overrides that match them."""
    trained = (module.hparams.get("meta") or {}).get("images") or {}
    if not trained:
        return None
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dataset, splits = data.get("dataset") or {}, data.get("splits") or {}
    differences, overrides = [], []
    size = (trained.get("height"), trained.get("width"))
    now = (dataset.get("height"), dataset.get("width"))
    if None not in size and size != now:
        differences.append(f"{now[0]}x{now[1]} images instead of {size[0]}x{size[1]}")
        overrides.append(f"data.dataset.height={size[0]} data.dataset.width={size[1]}")
    count = (trained.get("num_images") or {}).get(split)
    count_now = (splits.get(split) or {}).get("num_images")
    if count is not None and count_now is not None and count != count_now:
        differences.append(f"{count_now} {split} images instead of {count}")
        overrides.append(f"data.splits.{split}.num_images={count}")
    if not differences:
        return None
    experiment = trained.get("experiment")
    match = f"experiment={experiment} (or {' '.join(overrides)})" if experiment else " ".join(overrides)
    return (
        f"the checkpoint was trained on other images than this evaluation uses: {'; '.join(differences)}; "
        f"add {match} to evaluate on the images it was trained for"
    )


def warn_if_other_images(module: MultiTaskModule, cfg: DictConfig, split: str) -> None:
    message = other_images(module, cfg, split)
    if message:
        log.warning(message)  # on the console and in the job's log file: once


def model_info(ckpt: Path, module: MultiTaskModule, data: str, split: str, study: str) -> dict[str, Any]:
    """Identity of the evaluated model: the part of a results row that does not depend on the attack."""
    spec = module.hparams.model_spec
    layout = module.model.layout
    layout_spec = spec.get("layout")
    return (
        {
            "study": study,
            "checkpoint": str(ckpt),
            "model_id": weights_id(module),
            "data": data,
            "split": split,
            "tasks": list(module.model.tasks),
            "backbone": spec["backbone"]["name"]
            if isinstance(spec["backbone"], Mapping)
            else spec["backbone"],
            "layout": layout.describe(),
            "layout_name": layout_spec if isinstance(layout_spec, str | int) else "explicit",
            "sharing_score": layout.sharing_score(),
            "shared_fraction": layout.shared_fraction,
            "defense": str(module.procedure),
            "train_seed": (module.hparams.get("meta") or {}).get("seed"),
        }
        | training_fields(module)
        | recipe_fields(module)
    )


def checkpoint_info(
    cfg: DictConfig, ckpt: Path, module: MultiTaskModule, device: torch.device, data: str
) -> dict[str, Any]:
    """The identity of a trained checkpoint evaluated by this job, before the precision, BPDA and image
    set are added: what its row keys start from (the planner counts finished cells with it too)."""
    info = model_info(ckpt, module, data, cfg.get("split", "val"), cfg.get("study", "default"))
    info["deterministic"] = evaluation_deterministic(module, device)
    return info


def evaluation_fields(cfg: DictConfig, datamodule: MultiTaskDataModule, split: str) -> dict[str, Any]:
    """The key fields the job's evaluation settings add to a model's identity: precision, BPDA, image set."""
    precision = parse_precision(cfg.get("eval", {}).get("precision", DEFAULT_PRECISION))
    bpda = parse_bpda(cfg.get("model_bpda"))
    image_set = image_set_id(cfg, datamodule, split)
    return {"precision": precision, **({"bpda": list(bpda)} if bpda else {}), "data_id": image_set}


def training_fields(module: MultiTaskModule) -> dict[str, Any]:
    """`training`: the checkpoint's training cost (and overfitting-watch verdict), for cost-vs-robustness
    reports. Absent for checkpoints written before it was recorded, so their row keys do not change."""
    record = module.training_record()
    return {"training": record} if record else {}


def recipe_fields(module: MultiTaskModule) -> dict[str, Any]:
    """`recipe` (the settings that trained the model, seed left out) and `recipe_id` (their hash): the
    identity seeds pair within. Absent for checkpoints trained before recipes were recorded; the report
    then pairs their seeds by seed number, as it used to, and says so."""
    recipe = TrainingRecipe.from_row((module.hparams.get("meta") or {}).get("recipe"))
    return {} if recipe is None else {"recipe": recipe.to_row(), "recipe_id": recipe.fingerprint}


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


def evaluated_images(split_size: int, batch_size: int, max_batches: int | None) -> int:
    """How many images an evaluation reads: the split's first `max_batches * batch_size` (all without a
    limit), in the reader's order (the loader does not shuffle)."""
    return split_size if not max_batches else min(split_size, int(max_batches) * int(batch_size))


def data_id(cfg: DictConfig, split: str, num_images: int, split_size: int) -> str:
    """Which images are evaluated, part of every key: the data set and split, and the number of images read
    from its start, never the settings that happen to select them (`eval.max_batches=1` at batch size 4
    and at 16 are two image sets; 4 batches of 4 and 1 of 16 are one). A whole split keeps the key it had
    before image counts were recorded, so stores of whole-split evaluations resume."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    images: dict[str, Any] = {"max_batches": None} if num_images >= split_size else {"num_images": num_images}
    return config_key({"dataset": data_cfg["dataset"], "split": data_cfg["splits"].get(split), **images})


def image_set_id(cfg: DictConfig, datamodule: MultiTaskDataModule, split: str) -> str:
    """The `data_id` of the images this job's evaluation reads (`eval.batch_size`, `eval.max_batches`)."""
    eval_cfg = cfg.get("eval", {})
    batch_size = eval_cfg.get("batch_size") or datamodule.eval_batch_size
    split_size = len(datamodule.dataset(split))
    return data_id(
        cfg, split, evaluated_images(split_size, batch_size, eval_cfg.get("max_batches")), split_size
    )


def build_cells(
    module: MultiTaskModule,
    specs: Sequence[AttackSpec],
    surrogates: Mapping[int, Surrogate] | None = None,
) -> list[Cell]:
    """Every normalised attack built, and so validated against the model's tasks, before any model work.
    `surrogates[i]`: the loaded surrogate of spec i (a transfer attack): its cell crafts on it."""
    cells = []
    for index, spec in enumerate(specs):
        if spec.is_ensemble:  # one cell, one row for all its rules and members
            cells.append(ensemble_cell(spec.config, module.tasks))
            continue
        spec = spec.over(module.tasks)  # an unknown target task fails here, before any model work
        task = spec.direction.task
        if task is not None and task not in module.tasks:
            raise ValueError(
                f"direction {spec.direction.name}: unknown task {task!r}; the model's tasks are "
                f"{list(module.tasks)}"
            )
        surrogate = (surrogates or {}).get(index)
        built, weighting = with_training_weights(spec.build(), module, surrogate is not None)
        attack = built.with_losses(module.tasks)
        if surrogate is None:
            cells.append(Cell(config=spec.row_config() | weighting, attack=attack))
        else:
            config = spec.row_config() | surrogate.fields
            cells.append(Cell(config=config, attack=crafted_on(surrogate.model, attack)))
    return cells


def with_training_weights(attack: Attack, module: MultiTaskModule, transfer: bool) -> tuple[Attack, dict]:
    """An attack whose direction is `weighted`, bound to the weights the model was trained with, and the
    row fields that say which (`direction_weights`, `direction_weights_source`); any other attack as is."""
    if not isinstance(attack.direction, Weighted):
        return attack, {}
    if transfer:
        raise ValueError(
            "direction weighted reads the attacked model's training weights; a transfer attack crafts on its "
            "surrogate, whose weights these are not: use direction=total for transfer cells"
        )
    weights, source = training_weights(module)
    attack.direction = attack.direction.bound(weights)
    return attack, {"direction_weights": weights, "direction_weights_source": source}


def surrogate_fields(path: Path, module: MultiTaskModule) -> dict[str, Any]:
    """What a transfer cell's row says (and its key holds) about the surrogate it was crafted on."""
    info = model_info(path, module, "", "", "")
    return {
        "surrogate_id": info["model_id"],
        "surrogate_layout": info["layout_name"],
        "surrogate_defense": info["defense"],
    }


def load_surrogates(
    specs: Sequence[AttackSpec],
    target: MultiTaskModule,
    device: torch.device,
    precision: str,
    resolve: CheckpointResolver | None,
) -> dict[int, Surrogate]:
    """Spec index -> its surrogate, each checkpoint loaded once and checked against the target's tasks."""
    loaded: dict[Path, Surrogate] = {}
    out = {}
    for index, spec in enumerate(specs):
        if spec.surrogate is None:
            continue
        path = surrogate_path(spec.surrogate, resolve)
        if path not in loaded:
            module = load_surrogate(path, target, device)
            loaded[path] = Surrogate(with_precision(module.model, precision), surrogate_fields(path, module))
        out[index] = loaded[path]
    return out


def evaluate_checkpoint(
    cfg: DictConfig,
    ckpt: str | Path | None,
    attacks: Sequence[tuple[Mapping[str, Any], DirectionConfig]],
    resolve_surrogate: CheckpointResolver | None = None,
) -> tuple[list[dict[str, Any]], PassResult, MultiTaskModule]:
    """Clean pass (cached per checkpoint and split), then every (attack, direction) config; returns the
    rows written. Each config is normalised once, here, and its attack built once before anything is
    loaded (bad budgets, steps or directions fail here) and again for the model's tasks. Transfer attacks'
    surrogates are loaded and checked before the clean pass; `resolve_surrogate` turns a surrogate given as
    training choices into its checkpoint (the pipeline's cache)."""
    configure_threads(cfg.get("num_threads"))
    check_sizes_and_seed(cfg)
    specs = [attack_spec(attack_cfg, direction_cfg) for attack_cfg, direction_cfg in attacks]
    for spec in specs:
        spec.build()
    bpda = parse_bpda(cfg.get("model_bpda"))
    device = resolve_device(cfg.get("device", "auto"))
    datamodule: MultiTaskDataModule = instantiate(cfg.data)
    split = cfg.get("split", "val")
    if is_user_model(cfg) and ckpt:
        raise ValueError("give either ckpt=<trained .ckpt> or model={_target_: ...}, not both")
    if is_user_model(cfg):  # bring your own model: model._target_ (+ model_weights) instead of a ckpt
        module = load_user_model(cfg, datamodule.build_tasks(), device)
        check_user_outputs(module, datamodule.dataset(split)[0][0][None].to(device))
        info = user_model_info(cfg, module, datamodule.name, split, cfg.get("study", "default"))
        info["deterministic"] = device.type == "cpu" or torch.are_deterministic_algorithms_enabled()
    elif not ckpt:
        raise ValueError("nothing to evaluate: give ckpt=<trained .ckpt> or 'model={_target_: <nn.Module>}'")
    else:
        module = load_module(ckpt, device).to(device)
        check_tasks_match(module, datamodule)
        warn_if_other_images(module, cfg, split)
        info = checkpoint_info(cfg, Path(ckpt), module, device, datamodule.name)
    eval_cfg = cfg.get("eval", {})
    info |= evaluation_fields(cfg, datamodule, split)
    surrogates = load_surrogates(specs, module, device, info["precision"], resolve_surrogate)
    cells = build_cells(module, specs, surrogates)
    # BPDA (straight-through gradients for named input transforms) changes the attacks, not the clean pass.
    model = with_precision(with_bpda(module.model, bpda), info["precision"])
    if bpda:
        check_bpda(model, datamodule.dataset(split)[0][0][None].to(device))
    batch_size = eval_cfg.get("batch_size") or datamodule.eval_batch_size
    batches = batches_factory(datamodule, split, batch_size, eval_cfg.get("max_batches"))
    progress = bool(eval_cfg.get("progress", True)) and interactive()  # no redrawn bars in log files
    clean_key = config_key({"model_id": info["model_id"], "data_id": info["data_id"], **precision_key(info)})
    per_image = bool(eval_cfg.get("per_image", False))
    clean_file = Path(cfg.store).parent / "per_image" / f"clean_{clean_key}.npz" if per_image else None

    def clean_pass() -> PassResult:
        torch.manual_seed(int(clean_key, 16) % 2**63)  # a model random at evaluation time: reproducible
        return run_pass(
            model,
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
        stats = clean.per_image or clean_pass().per_image
        save_stats(clean_file, stats, module.tasks, image_set=info["data_id"])
    log.info("clean pass %s (%d samples)", "reused from cache" if hit else "computed", clean.num_samples)
    diagnostics = diagnostics_for_rows(
        cfg.get("diagnostics"),
        model,
        module.tasks,
        batches,
        device,
        Path(cfg.cache_dir),
        {
            "model_id": info["model_id"],
            "data_id": info["data_id"],
            **precision_key(info),
            **({"bpda": info["bpda"]} if bpda else {}),
        },
    )
    train_split = OmegaConf.to_container(cfg.data, resolve=True)["splits"].get("train")
    if eval_cfg.get("trivial_baseline", True) and train_split:
        # What "the model learned something" is measured against (report flag undertrained:<task>).
        train_batches = batches_factory(datamodule, "train", datamodule.eval_batch_size, None)
        key = config_key({"train": train_split, "data_id": info["data_id"]})
        cache_file = Path(cfg.cache_dir) / f"trivial_{key}.json"
        diagnostics |= baseline_for_rows(module.tasks, train_batches, batches, cache_file)
    store = ResultsStore(cfg.store)
    examples = int(eval_cfg.get("examples", 0) or 0)
    rows = evaluate_cells(
        model,
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
    for line in flag_lines(rows):
        print(line)
    print(f"results: {cfg.store}")
    result = rows[0].get("results", {}).get("rel_avg")
    value = float(result) if result is not None else float("nan")
    check_cells(rows, cfg.store, value)
    return value


def main() -> None:
    exit_with_sweep_status(hydra_main)


if __name__ == "__main__":
    main()
