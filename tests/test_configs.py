"""Every shipped config composes, and the pieces it names instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR


def resolve_job_config(cfg) -> dict:
    """Resolve every interpolation a job sees (Hydra's own node holds sweep-time values: left out)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in (
        "data",
        "backbone",
        "sharing",
        "train",
        "trainer",
        "logger",
        "paths",
        "hydra",
        "experiment",
    ):
        assert options(group), f"conf/{group} is empty"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(compose, experiment: str) -> None:
    # Studies are multiruns of the pipeline; the other experiments also work with plain training.
    for config_name in ("pipeline",) if experiment.startswith("study_") else ("train", "pipeline"):
        cfg = compose([f"experiment={experiment}"], config_name=config_name)
        resolve_job_config(cfg)
        assert cfg.model.backbone.name and cfg.model.layout is not None


@pytest.mark.parametrize("experiment", [e for e in options("experiment") if e.startswith("study_")])
def test_study_attack_grids_build(compose, experiment: str) -> None:
    from mtl_robust.attacks.config import attack_from_config
    from mtl_robust.jobs.pipeline import attack_list

    cfg = compose([f"experiment={experiment}"], config_name="pipeline")
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params, "a study is one multirun command"
    cells = attack_list(cfg, list(cfg.data.tasks))
    assert cells
    for attack, direction in cells:
        attack_from_config(attack, direction)


@pytest.mark.parametrize("attack", options("attack"))
@pytest.mark.parametrize("direction", options("direction"))
def test_attack_and_direction_options_build(compose, attack: str, direction: str) -> None:
    from mtl_robust.attacks.config import attack_from_config

    cfg = compose(["ckpt=x.ckpt", f"attack={attack}", f"direction={direction}"], config_name="attack")
    configs = (
        OmegaConf.to_container(cfg.attack, resolve=True),
        OmegaConf.to_container(cfg.direction, resolve=True),
    )
    if attack == "square" and direction in ("sign_sum", "dgba_reference"):  # TOTAL / DGBA without a gradient
        with pytest.raises(ValueError, match="only in its gradient step"):
            attack_from_config(*configs)
        return
    assert attack_from_config(*configs).eps == pytest.approx(8 / 255)


@pytest.mark.parametrize(
    "group", ["data", "backbone", "sharing", "train", "defense", "trainer", "logger", "launcher"]
)
def test_group_options_compose(compose, group: str) -> None:
    for option in options(group):
        cfg = compose([f"{group}={option}"])
        resolve_job_config(cfg)


@pytest.mark.parametrize("sharing", options("sharing"))
def test_sharing_options_build_models(compose, sharing: str) -> None:
    from mtl_robust.jobs.train import build_module

    cfg = compose([f"sharing={sharing}", "experiment=smoke"])
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    assert set(module.model.tasks) == set(cfg.data.tasks)


@pytest.mark.parametrize("backbone", options("backbone"))
def test_backbone_options_build_models(compose, backbone: str) -> None:
    from mtl_robust.models import build_model

    cfg = compose([f"backbone={backbone}"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_model(**model_cfg, tasks={"seg": 40, "normal": 3, "depth": 1})
    assert model.tasks == ("seg", "normal", "depth")


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainers_instantiate(compose, trainer: str) -> None:
    overrides = [f"trainer={trainer}", "trainer.accelerator=cpu"]
    if trainer == "ddp":
        overrides.append("trainer.devices=2")
    cfg = compose(overrides)
    trainer_obj = instantiate(cfg.trainer, logger=False)
    # The training length comes from the train group, whatever the hardware.
    assert trainer_obj.max_epochs == cfg.train.max_epochs
    if trainer == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        assert isinstance(trainer_obj.strategy, DDPStrategy) and trainer_obj.num_devices == 2


def test_real_data_configs_point_at_readers(compose, tmp_path: Path) -> None:
    from tests.fakes_formats import (
        write_cityscapes,
        write_nyuv2_adashare,
        write_nyuv2_mtan,
        write_pascal_context,
        write_taskonomy_adashare,
    )

    roots = {
        "nyuv2": write_nyuv2_adashare(tmp_path / "nyu", n_train=2, n_test=2),
        "nyuv2_mtan": write_nyuv2_mtan(tmp_path / "mtan", n_train=2, n_val=2, height=48, width=64),
        "taskonomy": write_taskonomy_adashare(tmp_path / "taskonomy", n_train=2, n_test=2, n_test_small=2),
        "cityscapes": write_cityscapes(tmp_path / "city", n_train=2, n_val=2),
        "cityscapes_adashare": write_cityscapes(tmp_path / "city_ada", n_train=2, n_val=2, format="adashare"),
        "cityscapes_libmtl": write_cityscapes(tmp_path / "city_libmtl", n_train=2, n_val=2, format="libmtl"),
        "pascal_context": write_pascal_context(tmp_path / "pascal", n_train=2, n_val=2),
    }
    for data, root in roots.items():
        cfg = compose([f"data={data}", f"data.root={root}", "data.num_workers=0"])
        datamodule = instantiate(cfg.data)
        tasks = datamodule.build_tasks()
        x, targets = datamodule.dataset("train")[0]
        assert x.shape[0] == 3 and set(targets) == set(tasks)


def test_attack_and_pipeline_share_one_evaluation_block(compose) -> None:
    """The eval / diagnostics / store settings are one block (conf/common/evaluation.yaml) in both jobs."""
    shared = ("eval", "diagnostics", "store", "cache_dir")
    attack = resolve_job_config(compose(["ckpt=x.ckpt", "study=mine"], config_name="attack"))
    pipeline = resolve_job_config(compose(["study=mine"], config_name="pipeline"))
    assert {k: attack[k] for k in shared} == {k: pipeline[k] for k in shared}
    assert attack["eval"]["per_image"] is True and attack["diagnostics"]["enabled"] is False
    assert attack["store"].endswith("logs/results/mine.jsonl")


# The studies that report one method and budget (the others report every cell of their store).
REPORT_EXTRA_ARGS = {
    "study_fast_at_smoke": ["--method", "pgd", "--eps", "8/255"],
    "study_tradeoff_paper": ["--method", "pgd", "--eps", "8/255"],
    "study_tradeoff_smoke": ["--method", "pgd", "--eps", "8/255"],
    "study_tradeoff_vit_smoke": ["--method", "pgd", "--eps", "8/255"],
}


@pytest.mark.parametrize("experiment", [e for e in options("experiment") if e.startswith("study_")])
def test_every_study_ends_with_its_report(compose, tmp_path: Path, experiment: str) -> None:
    from mtl_robust.jobs.hydra_callbacks import ReportOnMultirunEnd

    cfg = compose([f"experiment={experiment}"], config_name="pipeline")
    assert cfg.task_name == cfg.study and cfg.hydra.mode.name == "MULTIRUN"
    # Hydra calls end hooks last-first: the report is written before the failed-jobs summary line.
    assert list(cfg.hydra.callbacks) == ["output_folder", "job_failures", "sweep_progress", "report"]
    report = instantiate(cfg.hydra.callbacks.report)
    assert isinstance(report, ReportOnMultirunEnd)
    assert report.store == str(tmp_path / "logs" / "results" / f"{cfg.study}.jsonl") == cfg.store
    assert report.out == str(tmp_path / "logs" / "reports" / cfg.study)
    assert report.extra_args == REPORT_EXTRA_ARGS.get(experiment, [])


def test_report_callback_is_a_hydra_callbacks_option(compose, tmp_path: Path) -> None:
    # Any multirun, not only the studies, can end with its report.
    cfg = compose(["hydra/callbacks=report", "study=mine"], config_name="pipeline")
    assert instantiate(cfg.hydra.callbacks.report).out == str(tmp_path / "logs" / "reports" / "mine")


def _defense(compose, overrides: list[str]) -> dict:
    return resolve_job_config(compose(overrides, config_name="pipeline"))["defense"]


def test_adv_train_takes_its_attack_and_direction_from_the_groups(compose) -> None:
    from mtl_robust.attacks.config import attack_from_config
    from mtl_robust.lightning.module import defense_name

    defense = _defense(compose, ["defense=adv_train"])
    pgd = resolve_job_config(compose(["attack=pgd"], config_name="pipeline"))["attack"]
    # The attack group's PGD, but random starts drawn fresh every training step (no fixed attack seed).
    assert defense["attack"] == {**pgd, "seed": None}
    assert defense["direction"] == {"name": "total", "task": None}
    assert defense_name(defense) == "adv_train:pgd-total"
    assert attack_from_config(defense["attack"], defense["direction"]).seed is None

    mim = _defense(compose, ["defense=adv_train", "attack@defense.attack=mim", "defense.attack.steps=5"])
    assert mim["attack"]["method"] == "mim" and mim["attack"]["decay"] == 1.0 and mim["attack"]["steps"] == 5
    assert defense_name(mim) == "adv_train:mim-total"
    single = _defense(compose, ["defense=adv_train", "direction@defense.direction=single"])
    assert defense_name(single) == "adv_train:pgd-single:seg"
    by_keys = ["defense=adv_train", "defense.direction.name=single", "defense.direction.task=seg"]
    assert _defense(compose, by_keys) == single


@pytest.mark.parametrize("method", ["adv_train", "fgsm_rs", "n_fgsm", "free_at"])
def test_dgba_defenses_are_the_direction_group_choice(compose, method: str) -> None:
    from mtl_robust.lightning.module import defense_name

    dgba = _defense(compose, [f"defense=dgba/{method}"])
    assert dgba["direction"] == {"name": "dgba", "task": None}
    assert dgba == _defense(compose, [f"defense={method}", "direction@defense.direction=dgba"])
    assert dgba == _defense(compose, [f"defense={method}", "defense.direction.name=dgba"])
    assert defense_name(dgba).endswith(":dgba") or defense_name(dgba) == "adv_train:pgd-dgba"


# Training keys as computed before the defenses took their attack and direction from the groups (with the
# runtime pinned): the checkpoints cached then must still be found.
TRAINING_KEYS = {
    "": "714077aaf8a3a162",
    "defense=adv_train": "b95d914e534bf3af",
    "defense=dgba/adv_train": "577fb8c44ec2925e",
    "defense=adv_train defense.direction.name=dgba": "577fb8c44ec2925e",
    "defense=adv_train defense.attack.steps=3": "f42fe1455d51bcce",
    "defense=adv_train defense.mode=mixed": "1711c550e145ed1b",
    "defense=adv_train co_watch=enabled": "4622439cae813397",
    "defense=fgsm_rs": "7bac85d29bc12976",
    "defense=dgba/fgsm_rs": "34e3b1ae817967f6",
    "defense=n_fgsm": "871b96afdc6abb2c",
    "defense=dgba/n_fgsm": "66f647ba4ba70a19",
    "defense=free_at": "baf3ce8a2a040b05",
    "defense=dgba/free_at": "177d495b362519ac",
    # These two studies' recipes were changed on purpose (models that learn in 80 steps; a 2-step mixed
    # PGD-AT at smoke scale): their cached models are trained once more.
    "experiment=study_reliability_smoke defense=adv_train": "7520a17b7dd9da58",  # mode=mixed: equal steps
    "experiment=study_fast_at_smoke defense=dgba/free_at": "8a1180c74ca6dfa3",
    "experiment=study_directions_smoke defense=adv_train seed=2": "41a6a85db1869eff",
}


@pytest.mark.parametrize("overrides", sorted(TRAINING_KEYS))
def test_training_keys_of_existing_configs_are_unchanged(compose, monkeypatch, overrides: str) -> None:
    import mtl_robust.jobs.pipeline as pipeline

    runtime = {"train_num_threads": 2, "torch": "pinned", "accelerator": "cpu", "deterministic": True}
    monkeypatch.setattr(pipeline, "runtime_info", lambda cfg: runtime)
    cfg = compose(overrides.split(), config_name="pipeline")
    assert pipeline.training_key(cfg) == TRAINING_KEYS[overrides]


def test_training_key_tells_defenses_apart(compose) -> None:
    from mtl_robust.jobs.pipeline import training_key

    keys = {
        training_key(compose(overrides, config_name="pipeline"))
        for overrides in (
            ["defense=adv_train"],
            ["defense=adv_train", "attack@defense.attack=mim"],
            ["defense=adv_train", "defense.attack.seed=0"],
            ["defense=adv_train", "+defense.attack.attack_losses.seg=segpgd"],
            ["defense=adv_train", "direction@defense.direction=single"],
            ["defense=adv_train", "direction@defense.direction=single", "defense.direction.task=depth"],
        )
    }
    assert len(keys) == 6


def test_lp_check_budget_is_written_as_a_fraction(compose) -> None:
    from mtl_robust.lightning.lp_crosscheck import LPCrossCheck

    cfg = compose(["lp_check=enabled"])
    assert cfg.callbacks.lp_check.eps == "8/255"
    callback = instantiate(cfg.callbacks.lp_check)
    assert callback.attack.eps == 8 / 255 and callback.attack.first_step_size == 8 / 255
    assert LPCrossCheck(eps=0.02, direction="total").attack.eps == 0.02
    with pytest.raises(ValueError, match="lp_check.eps"):
        LPCrossCheck(eps="2", direction="total")
