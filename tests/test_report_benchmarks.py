"""The report on the new axes: 2 tasks (Cityscapes), the 5 PASCAL-Context tasks, the ViT backbone."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.jobs.report import main
from mtl_robust.report.order import task_sort_key
from mtl_robust.report.records import load_records
from mtl_robust.report.transfer import transfer_sets
from mtl_robust.values.budget import parse_eps
from tests.conftest import run_entry_point

# data set -> (tasks, metrics with their direction, output channels)
BENCHMARKS = {
    "cityscapes": (
        ["seg", "depth"],
        {"seg": {"miou": True, "pixel_acc": True}, "depth": {"abs_err": False, "rel_err": False}},
        {"seg": 7, "depth": 1},
    ),
    "pascal_context": (
        ["seg", "human_parts", "saliency", "normal", "edge"],
        {
            "seg": {"miou": True},
            "human_parts": {"miou": True},
            "saliency": {"max_f": True, "miou": True},
            "normal": {"mean_angle": False},
            "edge": {"f_measure": True, "bce": False},
        },
        {"seg": 21, "human_parts": 7, "saliency": 1, "normal": 3, "edge": 1},
    ),
}
LAYOUTS = {"all_shared": (15, 1.0), "independent": (0, 0.0)}  # sharing score, transfer strength
# (data set, backbone) of the models in the store: both shapes on the ViT
MODELS = (("cityscapes", "vit_small"), ("pascal_context", "vit_small"))


def _clean(data: str, layout: str) -> dict[str, dict[str, float]]:
    _, hib, _ = BENCHMARKS[data]
    bonus = 0.02 if layout == "all_shared" else 0.0
    return {t: {m: (0.5 + bonus if up else 0.5 - bonus) for m, up in ms.items()} for t, ms in hib.items()}


def _rel(tasks: list[str], direction: str, strength: float, pixels: int) -> dict[str, float]:
    e = pixels / 8
    if direction.startswith("single:"):
        hit = direction.split(":")[1]
        return {t: (-0.3 if t == hit else -0.1 * strength) * e for t in tasks}
    if direction == "total":
        return {t: (-0.4 if i == 0 else -0.05) * e for i, t in enumerate(tasks)}
    return {t: -0.2 * e for t in tasks}  # dgba: even


def _example(path: Path, channels: dict[str, int], n: int = 2, size: int = 16) -> None:
    g = torch.Generator().manual_seed(0)

    def target(task: str, c: int) -> torch.Tensor:
        if task in ("seg", "human_parts"):
            t = torch.randint(0, c, (n, size, size), generator=g)
            t[:, :2] = 255
            return t
        if task in ("saliency", "edge"):
            t = (torch.rand(n, 1, size, size, generator=g) > 0.7).float()
            t[:, :, :2] = 255.0
            return t
        return torch.rand(n, c, size, size, generator=g)

    def preds() -> dict[str, torch.Tensor]:
        return {t: torch.randn(n, c, size, size, generator=g) for t, c in channels.items()}

    x = torch.rand(n, 3, size, size, generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "x": x,
            "x_adv": (x + 8 / 255).clamp(0, 1),
            "preds_clean": preds(),
            "preds_adv": preds(),
            "targets": {t: target(t, c) for t, c in channels.items()},
        },
        path,
    )


def _config(data: str, backbone: str, layout: str, direction: str, pixels: int) -> dict:
    return {
        "study": "benchmarks",
        "checkpoint": f"/ckpt/{data}-{backbone}-{layout}.ckpt",
        "model_id": f"{data}-{backbone}-{layout}",
        "data": data,
        "split": "val",
        "tasks": BENCHMARKS[data][0],
        "backbone": backbone,
        "layout": f"desc of {layout}",
        "layout_name": layout,
        "sharing_score": LAYOUTS[layout][0],
        "shared_fraction": LAYOUTS[layout][0] / 15,
        "defense": "none",
        "method": "pgd",
        "direction": direction,
        "eps": pixels / 255,
        "pixel_eps": pixels,
        "steps": 10,
        "alpha": None,
        "random_start": False,
        "attack_loss": "task",
        "seed": 0,
    }


def build_store(path: Path) -> None:
    store = ResultsStore(path)
    for data, backbone in MODELS:
        tasks, hib, channels = BENCHMARKS[data]
        directions = [f"single:{t}" for t in tasks] + ["total", "dgba"]
        for layout, (_, strength) in LAYOUTS.items():
            for pixels in (4, 8):
                for direction in directions:
                    rel = _rel(tasks, direction, strength, pixels)
                    example = None
                    if (backbone, layout, direction, pixels) == ("vit_small", "all_shared", "dgba", 8):
                        example = f"examples/{data}.pt"
                        _example(path.parent / example, channels)
                    clean = _clean(data, layout)
                    results = {
                        "clean": clean,
                        "adv": clean,
                        "higher_is_better": hib,
                        "rel_task": rel,
                        "rel_avg": sum(rel.values()) / len(rel),
                        "num_samples": 4,
                        "seconds": 1.0,
                        "example": example,
                    }
                    cfg = _config(data, backbone, layout, direction, pixels)
                    store.append(config_key(cfg), cfg, results)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("bench_report")
    store = root / "store" / "results.jsonl"
    build_store(store)
    out = root / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--store", str(store), "--out", str(out)]) == 0
    return out, store, printed.getvalue().splitlines()


def _md_header(path: Path) -> list[str]:
    line = next(ln for ln in path.read_text().splitlines() if ln.startswith("|"))
    return [c.strip() for c in line.strip("|").split(" | ")]


@pytest.mark.parametrize(("data", "backbone"), MODELS)
def test_relative_and_clean_tables_have_every_task(report, data: str, backbone: str) -> None:
    out, *_ = report
    tasks = sorted(BENCHMARKS[data][0], key=task_sort_key)  # the report's task order
    expected = (
        ["seg", "human_parts", "saliency", "normal", "edge"] if data == "pascal_context" else ["seg", "depth"]
    )
    assert tasks == expected  # the papers' order
    header = _md_header(out / "tables" / f"rel_{data}_{backbone}_none_pgd_eps8.md")
    assert header == ["layout", "sharing", "direction", *[f"{t} (%)" for t in tasks], "avg (%)"]
    with (out / "tables" / f"rel_{data}_{backbone}_none_pgd_eps8.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(LAYOUTS) * (len(tasks) + 2)
    dgba = next(r for r in rows if r["layout"] == "all_shared" and r["direction"] == "DGBA")
    assert float(dgba["avg (%)"]) == pytest.approx(-20.0)
    with (out / "tables" / f"clean_{data}_{backbone}_none.csv").open(newline="") as fh:
        clean = list(csv.DictReader(fh))
    assert [r["layout"] for r in clean] == ["all_shared", "independent"]
    assert float(clean[0]["gain avg (%)"]) == pytest.approx(4.0)  # 0.52 vs 0.50 and 0.48 vs 0.50, every task


def test_transfer_matrices_are_square_over_the_tasks(report) -> None:
    out, store, _ = report
    sets, _ = transfer_sets(load_records([store]), method="pgd", eps=parse_eps("8/255"))
    five = [s for s in sets if set(s.matrix) == set(BENCHMARKS["pascal_context"][0])]
    two = [s for s in sets if list(s.matrix) == ["seg", "depth"]]
    assert len(five) == len(two) == len(LAYOUTS)
    shared = next(s for s in five if s.layout_name == "all_shared")
    assert shared.matrix["saliency"]["saliency"] == pytest.approx(-30.0)
    assert shared.matrix["saliency"]["edge"] == pytest.approx(-10.0)
    assert all(len(row) == 5 for row in shared.matrix.values())


def test_every_figure_is_a_valid_png_for_each_shape(report) -> None:
    out, _, printed = report
    names = sorted(p.name for p in (out / "plots").glob("*.png"))
    for data, backbone in MODELS:
        assert any(n.startswith(f"transfer_{data}_{backbone}_") for n in names), (data, backbone)
        assert any(n.startswith(f"tradeoff_{data}_{backbone}_") for n in names), (data, backbone)
        assert any(n.startswith(f"eps_{data}_{backbone}_") for n in names), (data, backbone)
    assert sum(n.startswith("example_") for n in names) == 2  # the 2-task and the 5-task grid
    for name in names:
        with Image.open(out / "plots" / name) as im:
            im.verify()
    five = next(n for n in names if n.startswith("example_") and "pascal_context" in n)
    two = next(n for n in names if n.startswith("example_") and "cityscapes" in n)
    with Image.open(out / "plots" / five) as big, Image.open(out / "plots" / two) as small:
        assert big.width > small.width  # one column of panels per task
    summary = (out / "summary.md").read_text()
    assert all(f"plots/{n}" in summary for n in names)


@pytest.mark.slow
def test_vit_on_the_five_task_shape_end_to_end(tmp_path: Path) -> None:
    """Train a small ViT on the PASCAL-shaped scenes, attack it with DGBA and TOTAL, write the report."""
    args = [
        "experiment=study_benchmarks_vit_smoke",
        "hydra.sweeper.params.data=pascal_context_synthetic",
        "hydra.sweeper.params.sharing=branch_at_3",
        "train.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "data.splits.train.num_images=32",
        "data.splits.val.num_images=8",
        "data.splits.test.num_images=8",
        "pipeline.attacks.pgd.steps=2",
    ]
    proc = run_entry_point("mtl_robust.pipeline", args, tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "logs" / "results" / "benchmarks_vit_smoke.jsonl"
    rows = list(ResultsStore(store).latest().values())
    attacked = [r for r in rows if r["config"]["method"] == "pgd"]
    assert {r["config"]["direction"] for r in attacked} == {"total", "dgba"}
    tasks = BENCHMARKS["pascal_context"][0]
    for row in attacked:
        assert row["status"] == "ok" and row["config"]["backbone"] == "vit_small"
        assert set(row["results"]["rel_task"]) == set(tasks)
    summary = (tmp_path / "logs" / "reports" / "benchmarks_vit_smoke" / "summary.md").read_text()
    assert "pascal_context_synthetic" in summary and "vit_small" in summary
