import os

import pytest

from mtl_robust.files import atomic_copy, atomic_path, atomic_write_text


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["f.txt"]


def test_failure_inside_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"complete")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"trunc")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"complete"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_copy(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 10_000)
    out = atomic_copy(src, tmp_path / "dst")
    assert out.read_bytes() == src.read_bytes()


def test_lightning_checkpoints_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import torch

    import mtl_robust.lightning.checkpoints as checkpoints

    target = tmp_path / "checkpoints" / "last.ckpt"
    io = checkpoints.AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    assert torch.load(target)["state_dict"]["w"].sum() == 3

    def killed(obj, path):  # a job killed mid-write: half a file, then nothing more
        open(path, "wb").write(b"PK\x03\x04trunc")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    assert torch.load(target)["state_dict"]["w"].sum() == 3
    assert os.listdir(target.parent) == ["last.ckpt"]
