"""Bad files and bad input end in one message that names the file and what was expected, never deeper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from mtl_robust.attacks.config import attack_from_config
from mtl_robust.data.errors import DataFormatError
from mtl_robust.data.nyuv2 import NYUv2
from mtl_robust.jobs.train import train
from mtl_robust.lightning.checkpoints import CheckpointError
from mtl_robust.lightning.module import load_module
from tests.conftest import compose_config, run_entry_point
from tests.fakes_formats import write_nyuv2_adashare


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    return train(compose_config("train", ["experiment=smoke", "trainer.max_steps=2"], out)).checkpoint


class _RunsCode:
    """A pickle payload: loading it with full unpickling would call os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_checkpoint_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "hyper_parameters": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused") as err:
        load_module(evil)
    assert str(evil) in str(err.value) and not marker.exists()
    assert load_module(checkpoint).model.tasks == ("seg", "normal", "depth")  # the real one still loads


@pytest.mark.parametrize("damage", ["truncated", "text", "not_lightning"])
def test_unusable_checkpoints_name_the_file(checkpoint: Path, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad.ckpt"
    if damage == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif damage == "text":
        bad.write_text("epoch 3, val loss 0.5\n")
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="expected a checkpoint written by") as err:
        load_module(bad)
    assert str(bad) in str(err.value)


def test_an_unloadable_cached_checkpoint_is_set_aside_and_retrained(tmp_path: Path, caplog) -> None:
    from mtl_robust.jobs.pipeline import trained_checkpoint, training_key

    cfg = compose_config("pipeline", ["experiment=smoke", "trainer.max_steps=2"], tmp_path)
    cached = Path(cfg.paths.log_dir) / "checkpoints" / f"{training_key(cfg)}.ckpt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 cut short by a kill during the copy")
    assert trained_checkpoint(cfg) == cached
    assert load_module(cached).model.tasks == ("seg", "normal", "depth")
    (aside,) = cached.parent.glob(f"{cached.stem}.unreadable-*.ckpt")
    assert aside.read_bytes().startswith(b"PK\x03\x04 cut short")
    assert any("moved to" in r.getMessage() for r in caplog.records)


def test_a_truncated_png_names_the_file_even_from_a_worker(tmp_path: Path) -> None:
    root = write_nyuv2_adashare(tmp_path / "nyu", n_train=2, n_test=1)
    image = root / "img" / "0001.png"
    image.write_bytes(image.read_bytes()[:200])
    dataset = NYUv2(root, split="train")
    with pytest.raises(DataFormatError, match="0001.png: the image cannot be decoded"):
        dataset[1]
    with pytest.raises(DataFormatError, match="expected a complete PNG file") as err:
        list(DataLoader(dataset, batch_size=1, num_workers=1))
    assert str(image) in str(err.value)


def test_eps_overrides_as_the_readme_writes_them(compose) -> None:
    def budget(overrides: list[str]) -> float:
        cfg = compose(["ckpt=x.ckpt", *overrides], config_name="attack")
        attack = OmegaConf.to_container(cfg.attack, resolve=True)
        return attack_from_config(attack, "dgba").eps

    assert budget([]) == pytest.approx(8 / 255)
    assert budget(["attack.pixel_eps=4"]) == pytest.approx(4 / 255)
    assert budget(["attack.eps=2/255"]) == pytest.approx(2 / 255)
    assert budget(["attack=fgsm", "attack.pixel_eps=6"]) == pytest.approx(6 / 255)
    with pytest.raises(ValueError, match="given twice.*attack.pixel_eps=8"):
        budget(["attack.eps=4/255", "attack.pixel_eps=4"])


def test_cli_errors_are_one_message_with_the_override_to_type(tmp_path: Path) -> None:
    proc = run_entry_point("mtl_robust.attack", [f"ckpt={tmp_path / 'x.ckpt'}", "attack.eps=8"], tmp_path)
    assert proc.returncode == 1
    assert "error: eps must lie in [0, 1]" in proc.stderr and "attack.eps=8/255" in proc.stderr
    assert "attack.pixel_eps=8" in proc.stderr and "Traceback" not in proc.stderr

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    proc = run_entry_point("mtl_robust.attack", [f"ckpt={text}", "experiment=smoke"], tmp_path)
    assert proc.returncode == 1 and f"error: checkpoint {text}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr

    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        proc = run_entry_point("mtl_robust.attack", [f"ckpt={text}", "experiment=smoke"], tmp_path)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "CheckpointError" in proc.stderr
