"""What a log file shows of training and of a sweep: one readable line per epoch (or per ~30 s), one line
per finished sweep job with the overall ETA, and no third-party noise (filtered by its exact message)."""

from __future__ import annotations

import io
import logging
import warnings
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from mtl_robust.jobs.hydra_callbacks import sweep_size
from mtl_robust.jobs.noise import quiet_third_party_noise
from mtl_robust.lightning.progress import EpochLines, epoch_line

TASKS = {
    "seg": SimpleNamespace(higher_is_better={"miou": True, "pixel_acc": True}),
    "depth": SimpleNamespace(higher_is_better={"abs_err": False}),
}


def test_an_epoch_line_has_the_count_the_losses_the_headline_metrics_and_the_eta() -> None:
    metrics = {
        "train/loss_epoch": 0.81234,
        "val/loss": 0.77,
        "val/seg/miou": 0.3121,
        "val/depth/abs_err": 0.5,
    }
    line = epoch_line(5, 20, metrics, TASKS, validated=True, elapsed=40.0)
    assert line == (
        "train epoch 5/20: loss 0.8123; val loss 0.7700, seg miou 0.3121, depth abs_err 0.5; "
        "elapsed 40s, ETA 2m00s"
    )
    # an epoch without validation shows no (stale) validation metrics
    assert epoch_line(6, 20, metrics, TASKS, validated=False, elapsed=48.0) == (
        "train epoch 6/20: loss 0.8123; elapsed 48s, ETA 1m52s"
    )


def test_epoch_lines_print_at_most_every_interval_plus_the_first_and_last_epoch(monkeypatch) -> None:
    import mtl_robust.lightning.progress as progress

    clock = iter(range(0, 1000, 10))  # every epoch takes 10 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    out = io.StringIO()
    callback = EpochLines(min_interval=30, stream=out)
    trainer = SimpleNamespace(
        current_epoch=0,
        max_epochs=8,
        is_global_zero=True,
        sanity_checking=False,
        callback_metrics={"train/loss_epoch": torch.tensor(1.0)},
    )
    callback.on_train_start(trainer, None)
    for epoch in range(8):
        trainer.current_epoch = epoch
        callback.on_train_epoch_end(trainer, SimpleNamespace(tasks=TASKS))
    printed = [line.split(":")[0] for line in out.getvalue().splitlines()]
    assert printed == ["train epoch 1/8", "train epoch 4/8", "train epoch 7/8", "train epoch 8/8"]


def test_the_sweep_size_multiplies_the_discrete_sweeps_of_params_and_command_line() -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"params": {"sharing": "a,b,c", "defense": "none,adv_train"}},
                "overrides": {"task": ["defense=none", "attack.eps=2/255,4/255", "seed=0"]},
            }
        }
    )
    assert sweep_size(config) == 3 * 1 * 2  # the command line's defense=none wins over the params'
    config.hydra.overrides.task = ["lr=interval(0.1,1.0)"]
    assert sweep_size(config) is None


def test_third_party_noise_is_dropped_by_its_exact_message_only(caplog) -> None:
    quiet_third_party_noise()
    quiet_third_party_noise()  # idempotent
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_third_party_noise()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn(
            "The number of training batches (4) is smaller than the logging interval Trainer(...)",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("some other FutureWarning", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["some other FutureWarning"]

    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info(
            "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](x)"
        )
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
