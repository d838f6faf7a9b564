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
    built = attack_from_config(
        OmegaConf.to_container(cfg.attack, resolve=True), OmegaConf.to_container(cfg.direction, resolve=True)
    )
    assert built.eps == pytest.approx(8 / 255)


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
    from tests.fakes_formats import write_nyuv2_adashare, write_nyuv2_mtan, write_taskonomy_adashare

    roots = {
        "nyuv2": write_nyuv2_adashare(tmp_path / "nyu", n_train=2, n_test=2),
        "nyuv2_mtan": write_nyuv2_mtan(tmp_path / "mtan", n_train=2, n_val=2, height=48, width=64),
        "taskonomy": write_taskonomy_adashare(tmp_path / "taskonomy", n_train=2, n_test=2, n_test_small=2),
    }
    for data, root in roots.items():
        cfg = compose([f"data={data}", f"data.root={root}", "data.num_workers=0"])
        datamodule = instantiate(cfg.data)
        tasks = datamodule.build_tasks()
        x, targets = datamodule.dataset("train")[0]
        assert x.shape[0] == 3 and set(targets) == set(tasks)
