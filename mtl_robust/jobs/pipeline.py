"""The pipeline job, the README's main command: train (or reuse the cached checkpoint of the same
config), then attack with SINGLE per task, TOTAL and DGBA, and print the comparison."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from mtl_robust.attacks.config import attack_spec, direction_spec
from mtl_robust.config_location import CONFIG_DIR, CONFIG_PATH
from mtl_robust.evaluation.claims import claimed
from mtl_robust.evaluation.passes import PassResult
from mtl_robust.evaluation.relative import RelativeChange
from mtl_robust.evaluation.runner import format_rows
from mtl_robust.evaluation.store import config_key
from mtl_robust.files import atomic_copy
from mtl_robust.jobs.attack import check_sizes_and_seed, evaluate_checkpoint
from mtl_robust.jobs.failures import check_cells, exit_with_sweep_status
from mtl_robust.jobs.loggers import log_rows
from mtl_robust.jobs.recipe import training_parts
from mtl_robust.jobs.runner import job_overrides, run_job, runtime_info
from mtl_robust.jobs.terminal_flags import flag_lines
from mtl_robust.jobs.train import train
from mtl_robust.lightning.checkpoints import CheckpointError, read_checkpoint
from mtl_robust.lightning.user_model import is_user_model
from mtl_robust.report.transfer import format_matrix, transfer_matrix
from mtl_robust.values.budget import format_pixels
from mtl_robust.values.direction import DirectionSpec, expand_per_task
from mtl_robust.values.norm import DEFAULT_NORM, Norm
from mtl_robust.values.surrogate import SurrogateSpec

log = logging.getLogger(__name__)


def training_key(cfg: DictConfig) -> str:
    """What determines the trained weights: the training parts of the config (data, model, recipe, defense,
    seed; not loggers or paths), plus the runtime that still changes them (training thread count, torch
    build, accelerator)."""
    return config_key({**training_parts(cfg), "runtime": runtime_info(cfg)})


def checkpoint_path(cfg: DictConfig) -> Path:
    """Where the cached checkpoint of this training config is (or will be) kept."""
    return Path(cfg.paths.log_dir) / "checkpoints" / f"{training_key(cfg)}.ckpt"


def trained_checkpoint(cfg: DictConfig) -> Path:
    """The cached checkpoint of this training config, training it first when there is none.

    Training is claimed (lock file next to the checkpoint), so two pipelines on one log folder never train
    the same config twice: the second waits and reuses. The cached copy is written atomically, and one that
    does not load is set aside with a warning and retrained.
    """
    cached = checkpoint_path(cfg)
    # A finished checkpoint is read without the claim (it is written atomically): a cache on a read-only
    # folder, or one another pipeline holds a claim in, still serves what it already has.
    if cfg.pipeline.reuse_checkpoint and cached.exists() and _reads(cached):
        log.info("reusing the checkpoint of this training config: %s", cached)
        return cached
    if os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP worker: rank zero holds the claim and copies
        return _train_into(cfg, cached)
    with claimed(cached.with_name(cached.name + ".claim"), what=f"the training of {cached.name}"):
        if cfg.pipeline.reuse_checkpoint and cached.exists() and _loads(cached):
            log.info("reusing the checkpoint of this training config: %s", cached)
            return cached
        return _train_into(cfg, cached)


def _train_into(cfg: DictConfig, cached: Path) -> Path:
    result = train(cfg)
    atomic_copy(result.checkpoint, cached)
    return cached


def _reads(cached: Path) -> bool:
    try:
        read_checkpoint(cached)
        return True
    except (CheckpointError, OSError):
        return False  # set aside and retrained under the claim


def _loads(cached: Path) -> bool:
    """Whether the cached checkpoint reads back; if not it is renamed aside (kept for inspection)."""
    try:
        read_checkpoint(cached)
        return True
    except (CheckpointError, OSError) as err:
        aside = cached.with_name(f"{cached.stem}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}.ckpt")
        os.replace(cached, aside)
        log.warning("cached checkpoint does not load (%s); moved to %s and training again", err, aside)
        return False


def attack_list(cfg: DictConfig, tasks: list[str]) -> list[tuple[dict[str, Any], str]]:
    """Every (attack, direction) cell of this job: methods x eps x directions, `single` expanded per task,
    each direction in its text form.

    The methods are `pipeline.attacks` (a dict of attack configs, e.g. filled by a study through
    `/attack@pipeline.attacks.<name>` defaults), or the one `attack` group choice.
    """
    methods = cfg.pipeline.get("attacks") or {"attack": cfg.attack}
    # Transfer studies: every cell once per surrogate (`pipeline.surrogates`, as attack.surrogate takes).
    given = cfg.pipeline.get("surrogates")
    surrogates = (OmegaConf.to_container(given, resolve=True) if given else None) or [None]
    choices = [
        direction_spec(OmegaConf.to_container(d, resolve=True)) if isinstance(d, DictConfig) else str(d)
        for d in cfg.pipeline.directions
    ]  # names ("dgba", "single") or direction configs ({name: toy, module: my_pkg.toy})
    directions = [str(spec) for spec in expand_per_task(choices, tasks)]
    cells = []
    for attack in methods.values():
        base = OmegaConf.to_container(attack, resolve=True)
        budgets = budgets_of(cfg, base)
        if base.get("method") == "ensemble":  # the ensemble holds its own directions: one cell per eps
            cells.extend(({**base, "eps": eps}, "ensemble") for eps in budgets)
            continue
        for surrogate in surrogates:
            with_surrogate = base if surrogate is None else {**base, "surrogate": surrogate}
            cells.extend(({**with_surrogate, "eps": eps}, d) for eps in budgets for d in directions)
    return cells


def budgets_of(cfg: DictConfig, attack: dict[str, Any]) -> list[Any]:
    """The budgets an attack of this job runs at: `pipeline.eps`, or for an attack under L2/L1 the radii
    `pipeline.eps_by_norm.<norm>` gives (a study that compares norms needs a radius per norm)."""
    norm = Norm.parse(attack.get("norm"))
    by_norm = cfg.pipeline.get("eps_by_norm") or {}
    if not norm.is_default and by_norm.get(str(norm)) is not None:
        return list(by_norm[str(norm)])
    return list(cfg.pipeline.eps)


def surrogate_checkpoints(cfg: DictConfig) -> Callable[[SurrogateSpec], Path]:
    """Resolves a surrogate given as training choices: the cached checkpoint of this job's training config
    with the surrogate's choices (sharing, defense, ...) in place of the job's own, trained first when the
    cache does not have it (claimed, as any training; in its own output folder, beside the job's). So a
    study's surrogates are the models it (or another study) trains as targets."""

    def resolve(spec: SurrogateSpec) -> Path:
        return trained_checkpoint(surrogate_config(cfg, spec, job_overrides()))

    return resolve


def surrogate_config(cfg: DictConfig, spec: SurrogateSpec, overrides: Sequence[str]) -> DictConfig:
    """The training config of a surrogate given as training choices: the job's `overrides` with the
    surrogate's choices in place of the job's own, in the job's folders (so its cache)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    chosen = {key for key, _ in spec.overrides}

    def replaced(override: str) -> bool:  # a chosen group replaces the job's settings inside it too
        key = override.split("=", 1)[0].lstrip("+~")
        return any(key == c or key.startswith(f"{c}.") for c in chosen)

    kept = [o for o in overrides if not replaced(o)]
    overrides = [*kept, *spec.override_list()]
    if GlobalHydra.instance().is_initialized():  # inside the job's Hydra app: its search path too
        surrogate = compose("pipeline", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            surrogate = compose("pipeline", overrides=overrides)
    paths = OmegaConf.to_container(cfg.paths, resolve=True)
    paths["output_dir"] = str(Path(paths["output_dir"]) / "surrogates" / training_key(surrogate))
    with open_dict(surrogate):  # the job's folders (the cache among them), not the defaults
        surrogate.paths = paths
    return surrogate


def format_clean(clean: PassResult, tasks: dict[str, Any]) -> str:
    lines = [f"{'task':<8} {'metric':<14} {'clean':>10}"]
    for t, task in tasks.items():
        for name, higher in task.higher_is_better.items():
            lines.append(
                f"{t:<8} {name:<14} {clean.metrics[t][name]:>10.4f}  ({'higher' if higher else 'lower'}"
                " is better)"
            )
    return "\n".join(lines)


def run_pipeline(cfg: DictConfig) -> list[dict[str, Any]]:
    check_sizes_and_seed(cfg)  # before training, not after it
    tasks = list(cfg.data.tasks)
    cells = attack_list(cfg, tasks)
    for attack, direction in cells:  # bad attack configs (a missing surrogate file) fail before training
        attack_spec(attack, direction)
    ckpt = None if is_user_model(cfg) else trained_checkpoint(cfg)  # the user's model: attack only
    rows, clean, module = evaluate_checkpoint(cfg, ckpt, cells, surrogate_checkpoints(cfg))
    log_rows(cfg.get("logger"), rows, cfg.study)
    print(f"\n{evaluated_model(cfg, ckpt, module)}\n")
    print(format_clean(clean, module.tasks))
    print("\nrelative change under attack (%, negative = worse; per task: mean over its metrics)")
    print(format_rows(rows, module.model.tasks))
    # One matrix per threat model and budget: an L2 radius and an L-inf budget never share one.
    for norm, eps in sorted({(str(Norm.parse(r["config"].get("norm"))), r["config"]["eps"]) for r in rows}):
        singles = {}  # attacked task -> the relative change of every evaluated task
        for r in rows:
            task = DirectionSpec.parse(r["config"]["direction"]).task
            same = str(Norm.parse(r["config"].get("norm"))) == norm and r["config"]["eps"] == eps
            if task is not None and same and r["status"] == "ok":
                singles[task] = RelativeChange(per_task=r["results"]["rel_task"])
        if singles:
            under = "" if norm == DEFAULT_NORM else f" ({Norm.parse(norm).label})"
            print(
                f"\ntransfer matrix at eps={format_pixels(eps, norm=norm)}{under} (%): "
                "SINGLE(attacked) -> evaluated task"
            )
            print(format_matrix(transfer_matrix(singles)))
    for line in flag_lines(rows):
        print(f"\n{line}")
    print(f"\nresults: {cfg.store}")
    check_cells(rows, cfg.store, rows)
    return rows


def evaluated_model(cfg: DictConfig, ckpt: Path | None, module: Any) -> str:
    if ckpt is None:
        weights = cfg.get("model_weights") or "its initial weights"
        return f"model: {cfg.model._target_} with {weights} (your own: not trained here)"
    return f"checkpoint: {ckpt}\nlayout: {module.model.layout.describe()}"


def own_model_overrides(args: Sequence[str]) -> list[str]:
    """`model={_target_: ...}` replaces the trained model's config instead of merging into it.

    The pipeline composes `model` from the backbone and sharing groups; Hydra merges a dict given on the
    command line into that node (and refuses its new keys), so the dict is given as `~model +model={...}`,
    which is what this writes for the user.
    """
    out: list[str] = []
    for arg in args:
        if arg.startswith("model={"):
            out.extend(["~model", f"+{arg}"])
        else:
            out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="pipeline")
def hydra_main(cfg: DictConfig) -> None:
    run_job(cfg, run_pipeline)


def main() -> None:
    sys.argv[1:] = own_model_overrides(sys.argv[1:])
    exit_with_sweep_status(hydra_main)


if __name__ == "__main__":
    main()
