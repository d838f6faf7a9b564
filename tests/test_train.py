"""Training end to end: the Lightning module learns, checkpoints rebuild without config, CLI sweeps run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtl_robust.jobs.train import train
from mtl_robust.lightning.module import MultiTaskModule, load_checkpoint
from tests.conftest import run_entry_point
from tests.wandb_records import offline_runs

NYU_METRICS = {
    "seg": {"miou", "pixel_acc"},
    "depth": {"abs_err", "rel_err", "delta1", "delta2", "delta3"},
    "normal": {"mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"},
}


def test_smoke_training_logs_every_metric_and_checkpoint_rebuilds(
    compose, tmp_path: Path, monkeypatch
) -> None:
    from mtl_robust.lightning.checkpoints import AtomicCheckpointIO

    written = []
    atomic_save = AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(
        AtomicCheckpointIO,
        "save_checkpoint",
        lambda self, c, p, storage_options=None: (
            written.append(p),
            atomic_save(self, c, p, storage_options),
        ),
    )
    cfg = compose(["experiment=smoke", "sharing=branch_at_2"])
    result = train(cfg)
    assert str(result.checkpoint) in map(str, written), "Lightning's last.ckpt was not written atomically"
    for task, names in NYU_METRICS.items():
        for name in names:
            assert f"val/{task}/{name}" in result.metrics, f"val/{task}/{name} not logged"
    assert result.checkpoint.exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val"]["val/loss"] == pytest.approx(result.metrics["val/loss"])

    # The checkpoint alone rebuilds the same model: layout, backbone and tasks travel with it.
    model, tasks = load_checkpoint(str(result.checkpoint))
    assert model.layout == result.module.model.layout
    assert set(tasks) == {"seg", "normal", "depth"}
    x = torch.rand(2, 3, 32, 32)
    reference = result.module.model.eval()
    with torch.no_grad():
        for t, pred in model(x).items():
            torch.testing.assert_close(pred, reference(x)[t])


def test_loss_weights_reach_the_objective(compose) -> None:
    cfg = compose(["experiment=smoke"])
    from hydra.utils import instantiate

    from mtl_robust.jobs.train import build_module

    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    losses = {"seg": torch.tensor(2.0), "normal": torch.tensor(0.5), "depth": torch.tensor(1.0)}
    assert module.weighted_loss(losses).item() == pytest.approx(3.5)
    weighted = MultiTaskModule(
        model_spec=module.hparams.model_spec,
        task_configs=module.hparams.task_configs,
        loss_weights={"normal": 20.0},
    )
    assert weighted.weighted_loss(losses).item() == pytest.approx(2.0 + 10.0 + 1.0)
    with pytest.raises(ValueError, match="unknown tasks"):
        MultiTaskModule(module.hparams.model_spec, module.hparams.task_configs, loss_weights={"edges": 1.0})


def test_wandb_logger_offline_without_account(compose, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose(["experiment=smoke", "logger=wandb", "logger.offline=true"])
    result = train(cfg)
    assert "val/seg/miou" in result.metrics
    # train() finishes its run, so the file is complete here: no race with wandb's writer
    (run,) = offline_runs(tmp_path)
    assert run.job_type == "train" and "layout=all_shared" in run.tags
    assert "train/loss_step" in run.history_keys or "train/loss_epoch" in run.history_keys


def run_cli(args: list[str], root: Path):
    return run_entry_point("mtl_robust.train", args, root)


def test_cli_multirun_over_layouts(tmp_path: Path) -> None:
    proc = run_cli(["-m", "experiment=smoke", "sharing=all_shared,independent,branch_at_2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = sorted((tmp_path / "logs").rglob("metrics.json"))
    assert len(metrics) == 3
    layouts = {line for line in proc.stdout.splitlines() if line.startswith("layout:")}
    assert len(layouts) == 3, proc.stdout[-2000:]
    assert proc.stdout.count("miou") == 3


@pytest.mark.parametrize("defense", ["none", "adv_train", "dgba/free_at"])
def test_ddp_on_cpu_with_two_processes(tmp_path: Path, defense: str) -> None:
    # Adversarial training takes two optimiser steps per batch (manual optimisation) under DDP too; Free AT
    # with DGBA takes one per replay, with an extra input-only backward and a perturbation carried per rank.
    proc = run_cli(
        [
            "experiment=smoke",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.sync_batchnorm=false",
            f"defense={defense}",
            *(["defense.attack.steps=1"] if defense == "adv_train" else []),
            *(["defense.replays=2"] if defense == "dgba/free_at" else []),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr, "two processes did not join"
    assert proc.stdout.count("checkpoint:") == 1, "only rank zero reports"
    (metrics,) = (tmp_path / "logs").rglob("metrics.json")
    assert "val/seg/miou" in json.loads(metrics.read_text())["val"]


def test_missing_data_root_is_one_clear_message(tmp_path: Path) -> None:
    proc = run_cli(["data=nyuv2", f"data.root={tmp_path / 'nowhere'}"], tmp_path)
    assert proc.returncode != 0
    assert "where to get it" in proc.stderr and "data.root=" in proc.stderr
    assert "Traceback" not in proc.stderr
