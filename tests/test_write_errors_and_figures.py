"""Files and figures as a user meets them: example files hold only their images, write failures are one
line naming the file, colour scales and legends read right, no verdict from an interval that prints as 0."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest
import torch

from mtl_robust.files import WriteError, atomic_path, atomic_write_text


def test_example_files_hold_only_their_images(tmp_path: Path) -> None:
    from torch import nn

    from mtl_robust.evaluation.passes import PassResult
    from mtl_robust.evaluation.runner import save_example

    class Model(nn.Module):
        def forward(self, x):
            return {"depth": x[:, :1]}

    batch, count, size = 32, 4, 32
    example = {
        "x": torch.rand(batch, 3, size, size),
        "x_eval": torch.rand(batch, 3, size, size),
        "preds": {"depth": torch.rand(batch, 1, size, size)},
        "targets": {"depth": torch.rand(batch, 1, size, size)},
    }
    adv = PassResult(metrics={}, losses={}, num_samples=batch, example=example)
    path = Path(save_example(tmp_path / "ex.pt", Model(), adv, count, torch.device("cpu")))
    images_bytes = 4 * count * size * size * (3 + 3 + 1 + 1 + 1)  # float32: x, x_adv, 3 one-channel maps
    assert path.stat().st_size < 1.2 * images_bytes + 20_000, path.stat().st_size
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["x"], example["x"][:count])


@pytest.mark.parametrize(
    "code, reason",
    [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system")],
)
def test_a_failed_write_is_one_line_naming_the_file(tmp_path: Path, monkeypatch, code, reason) -> None:
    def fail(*args, **kwargs):
        raise OSError(code, "simulated")

    target = tmp_path / "logs" / "results" / "study.jsonl"
    monkeypatch.setattr("pathlib.Path.write_bytes", fail)
    with pytest.raises(WriteError) as raised:
        atomic_write_text(target, "x")
    assert str(raised.value) == f"cannot write {target}: {reason}"
    assert not target.exists() and not list(target.parent.glob(".tmp-*"))


def test_a_full_disk_under_torch_save_names_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from mtl_robust import files
    from mtl_robust.jobs.failures import one_line_error

    monkeypatch.setattr(files, "_free_bytes", lambda folder: 0)
    target = tmp_path / "checkpoints" / "abc.ckpt"
    with pytest.raises(WriteError) as raised, atomic_path(target):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
            "file write failed"
        )
    line = str(one_line_error(raised.value).code).splitlines()[0]
    assert line.startswith(f"error: cannot write {target}: no space left on device"), line


def test_a_folder_that_cannot_be_created_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(WriteError, match=f"cannot write {blocker}/results/s.jsonl"):
        atomic_write_text(blocker / "results" / "s.jsonl", "x")


def test_a_heatmap_colour_scale_is_symmetric_and_floored() -> None:
    from mtl_robust.report.figures import MIN_COLOUR_LIMIT, colour_limit

    assert colour_limit([[0.0006, -0.0002], [math.nan, 0.0]]) == MIN_COLOUR_LIMIT
    assert colour_limit([[-12.5, 3.0]]) == 12.5


def test_the_cost_scatter_gives_every_defense_its_own_colour() -> None:
    from mtl_robust.report.cost import defense_colours

    names = [f"defense_{i}" for i in range(11)]
    colours = defense_colours([*names, names[0]])
    assert len(colours) == 11 and len(set(colours.values())) == 11


def test_an_interval_that_prints_as_zero_is_not_significant() -> None:
    from mtl_robust.evaluation.stats import Estimate

    tiny = Estimate(mean=-1e-6, std=1e-7, low=-2e-6, high=-5e-7, num_seeds=3, num_images=16, p_value=1.5e-11)
    assert not tiny.significant
    real = Estimate(mean=-0.02, std=0.001, low=-0.03, high=-0.01, num_seeds=3, num_images=16)
    assert real.significant


def test_one_eps_gives_no_curve(tmp_path: Path) -> None:
    from mtl_robust.report.curves import eps_curves
    from mtl_robust.report.records import Record

    def record(eps: float, direction: str, layout: str) -> Record:
        config = {
            "method": "pgd",
            "direction": direction,
            "eps": eps,
            "layout_name": layout,
            "data": "synthetic",
            "backbone": "small_resnet",
            "defense": "none",
            "tasks": ["seg"],
        }
        results = {"rel_task": {"seg": -0.1}, "rel_avg": -0.1, "clean": {"seg": {"miou": 0.5}}}
        return Record("s", f"{eps}{direction}{layout}", "ok", 0.0, config, results, "", tmp_path)

    records = [record(8 / 255, d, "one") for d in ("total", "dgba")]
    records += [record(e / 255, "total", "two") for e in (4, 8)]
    curves, notes = eps_curves(records)
    assert [c.layout_name for c in curves] == ["two"]
    assert any("one ε only" in n for n in notes), notes


def test_a_garbage_line_is_warned_about_once_per_event(tmp_path: Path, caplog) -> None:
    import logging

    from mtl_robust.evaluation.store import ResultsStore

    store = ResultsStore(tmp_path / "results.jsonl")
    store.append("good", {"eps": 1}, {"rel_avg": -0.1})
    with store.path.open("ab") as fh:
        fh.write(b"garbage\n")
    with caplog.at_level(logging.WARNING, logger="mtl_robust.evaluation.store"):
        store.latest()
        store.rows()  # the same job reads its store again: the same event
        assert len(caplog.records) == 1
        with store.path.open("ab") as fh:
            fh.write(b"more garbage\n")
        store.latest()  # a new unreadable line is news
    assert len(caplog.records) == 2 and "skipped 2 unreadable lines" in caplog.records[1].getMessage()
