"""Report command: tables, figures and summary from a hand-built results store with hand-checkable numbers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.jobs.report import main
from mtl_robust.report.records import load_records
from mtl_robust.report.transfer import transfer_sets
from mtl_robust.values.budget import format_eps, parse_eps

TASKS = ["seg", "normal", "depth"]
HIB = {"seg": {"miou": True, "pixel_acc": True}, "normal": {"mean_angle": False}, "depth": {"abs_err": False}}
# layout -> (sharing score, clean metrics, transfer strength)
LAYOUTS = {
    "all_shared": (
        15,
        {
            "seg": {"miou": 0.44, "pixel_acc": 0.66},
            "normal": {"mean_angle": 19.0},
            "depth": {"abs_err": 0.55},
        },
        1.0,
    ),
    "47": (
        9,
        {
            "seg": {"miou": 0.42, "pixel_acc": 0.60},
            "normal": {"mean_angle": 20.0},
            "depth": {"abs_err": 0.45},
        },
        0.6,
    ),
    "independent": (
        0,
        {
            "seg": {"miou": 0.40, "pixel_acc": 0.60},
            "normal": {"mean_angle": 20.0},
            "depth": {"abs_err": 0.50},
        },
        0.0,
    ),
}
DIRECTIONS = ["single:seg", "single:normal", "single:depth", "total", "dgba"]
EPS_PIXELS = [4, 8]


def rel_task(direction: str, strength: float, pixels: int) -> dict[str, float]:
    """Fake attack effect: SINGLE hits its task by -25% at 8/255 and the others by -10% x sharing strength."""
    e = pixels / 8
    if direction.startswith("single:"):
        attacked = direction.split(":")[1]
        return {t: (-0.25 if t == attacked else -0.10 * strength) * e for t in TASKS}
    if direction == "total":
        return {"seg": -0.05 * e, "normal": -0.30 * e, "depth": -0.05 * e}
    return {t: -0.2 * e * (1 + strength) / 2 for t in TASKS}  # dgba


def config(
    layout: str,
    direction: str,
    pixels: float,
    method: str = "pgd",
    study: str = "transfer",
    defense: str = "none",
) -> dict:
    return {
        "study": study,
        "checkpoint": f"/ckpt/{layout}.ckpt",
        "model_id": f"id-{layout}",
        "data": "synthetic",
        "split": "val",
        "tasks": TASKS,
        "backbone": "small_resnet",
        "layout": f"desc of {layout}",
        "layout_name": layout,
        "sharing_score": LAYOUTS[layout][0],
        "shared_fraction": LAYOUTS[layout][0] / 15,
        "defense": defense,
        "method": method,
        "direction": direction,
        "eps": pixels / 255,
        "pixel_eps": pixels,
        "steps": 10,
        "alpha": None,
        "random_start": False,
        "attack_loss": "task",
        "seed": 0,
    }


def results(layout: str, rel: dict[str, float | None], example: str | None = None) -> dict:
    finite = [v for v in rel.values() if v is not None]
    return {
        "clean": LAYOUTS[layout][1],
        "adv": LAYOUTS[layout][1],
        "higher_is_better": HIB,
        "rel_task": rel,
        "rel_avg": sum(finite) / len(finite),
        "num_samples": 8,
        "seconds": 1.0,
        "example": example,
    }


def write_example(path: Path, n: int = 4, size: int = 24) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    x_adv = (x + 8 / 255 * torch.randn(n, 3, size, size, generator=g).sign()).clamp(0, 1)
    seg_target = torch.randint(0, 5, (n, size, size), generator=g)
    seg_target[:, :4] = 255
    normal = torch.nn.functional.normalize(torch.randn(n, 3, size, size, generator=g), dim=1)
    normal[:, :, :, :3] = 0
    depth = torch.rand(n, 1, size, size, generator=g) * 5
    depth[:, :, -3:] = 0

    def preds() -> dict[str, torch.Tensor]:
        return {
            "seg": torch.randn(n, 5, size, size, generator=g),
            "normal": torch.randn(n, 3, size, size, generator=g),
            "depth": torch.rand(n, 1, size, size, generator=g) * 5,
        }

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "x": x,
            "x_adv": x_adv,
            "preds_clean": preds(),
            "preds_adv": preds(),
            "targets": {"seg": seg_target, "normal": normal, "depth": depth},
        },
        path,
    )


def build_store(path: Path, layouts=tuple(LAYOUTS), study: str = "transfer") -> dict[str, str]:
    """The fake store; returns the keys the tests look at."""
    store = ResultsStore(path)
    keys = {}
    for layout in layouts:
        strength = LAYOUTS[layout][2]
        for pixels in EPS_PIXELS:
            for direction in DIRECTIONS:
                cfg = config(layout, direction, pixels, study=study)
                key = config_key(cfg)
                rel: dict[str, float | None] = rel_task(direction, strength, pixels)
                example = None
                if (layout, direction, pixels) == ("all_shared", "dgba", 8):
                    # an older row of the same cell: the latest row must win
                    store.append(key, cfg, results(layout, {t: -0.99 for t in TASKS}))
                    example = "examples/all_shared_dgba.pt"  # relative: resolved against the store's folder
                    write_example(path.parent / example)
                if (layout, direction, pixels) == ("47", "total", 4):
                    rel["depth"] = None  # a metric that could not be computed
                store.append(key, cfg, results(layout, rel, example))
    if "independent" in layouts:
        cfg = config("independent", "none", 0, method="none", study=study)  # a clean-only row
        store.append(config_key(cfg), cfg, results("independent", {t: 0.0 for t in TASKS}))
    if "47" in layouts:
        cfg = config("47", "total", 8, method="apgd", study=study)
        keys["failed"] = config_key(cfg)
        store.append(
            keys["failed"],
            cfg,
            {},
            status="failed",
            error="RuntimeError('CUDA out of memory')\nTraceback (most recent call last): ...",
        )
        cfg = config("47", "dgba", 8, method="mim", study=study)
        keys["retried"] = config_key(cfg)  # failed once, then succeeded: not a failure any more
        store.append(keys["retried"], cfg, {}, status="failed", error="ValueError('transient')")
        store.append(keys["retried"], cfg, results("47", rel_task("dgba", 0.6, 8)))
    return keys


def read_md_table(path: Path, title_contains: str = "") -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]
    return header, rows


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list[str], Path]:
    root = tmp_path_factory.mktemp("report")
    store = root / "store" / "results.jsonl"
    keys = build_store(store)
    out = root / "out"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--store", str(store), "--out", str(out)]) == 0
    return out, keys, printed.getvalue().splitlines(), store


def test_eps_parsing_and_formatting() -> None:
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.25") == 0.25
    assert format_eps(8 / 255) == "8/255" and format_eps(0.5 / 255) == "0.5/255"
    for bad in ("abc", "2", "1/0", "-0.1"):
        with pytest.raises(ValueError):
            parse_eps(bad)


def test_relative_table_rows_columns_and_values(report) -> None:
    out, *_ = report
    header, rows = read_md_table(out / "tables" / "rel_synthetic_small_resnet_none_pgd_eps8.md")
    assert header == ["layout", "sharing", "direction", "seg (%)", "normal (%)", "depth (%)", "avg (%)"]
    expected_order = [
        (layout, label)
        for layout in ("all_shared", "47", "independent")  # most shared first (not by name: "47" < "all")
        for label in ("SINGLE(seg)", "SINGLE(normal)", "SINGLE(depth)", "TOTAL", "DGBA")
    ]
    assert [(r[0], r[2]) for r in rows] == expected_order
    first = dict(zip(header, rows[0]))
    assert first == {
        "layout": "all_shared",
        "sharing": "15",
        "direction": "SINGLE(seg)",
        "seg (%)": "-25.00",
        "normal (%)": "-10.00",
        "depth (%)": "-10.00",
        "avg (%)": "-15.00",
    }
    dgba = dict(zip(header, rows[4]))
    assert dgba["avg (%)"] == "-20.00"  # the latest row of the duplicated cell, not the older -99 %
    assert "-99.00" not in (out / "tables" / "rel_synthetic_small_resnet_none_pgd_eps8.md").read_text()
    # independent: SINGLE(seg) does not transfer to the other tasks
    assert dict(zip(header, rows[10]))["normal (%)"] == "0.00"  # no "-0.00" from -0.0

    _, rows4 = read_md_table(out / "tables" / "rel_synthetic_small_resnet_none_pgd_eps4.md")
    total = next(r for r in rows4 if r[0] == "47" and r[2] == "TOTAL")
    assert total[5] == "n/a"  # depth was null
    csv_rows = read_csv(out / "tables" / "rel_synthetic_small_resnet_none_pgd_eps4.csv")
    row = next(r for r in csv_rows if r["layout"] == "47" and r["direction"] == "TOTAL")
    assert row["depth (%)"] == "" and float(row["seg (%)"]) == pytest.approx(-2.5)
    assert float(row["avg (%)"]) == pytest.approx(-8.75)  # mean over the tasks with a value


def test_failed_cells_are_listed(report) -> None:
    out, keys, *_ = report
    header, rows = read_md_table(out / "tables" / "failed.md")
    assert header == ["key", "config", "error"]
    assert [r[0] for r in rows] == [keys["failed"]]  # the retried cell succeeded later: not a failure
    assert "47" in rows[0][1] and "apgd" in rows[0][1] and "CUDA out of memory" in rows[0][2]
    assert keys["failed"] in (out / "summary.md").read_text()


def test_clean_table_and_tradeoff_x_is_the_clean_gain(report) -> None:
    out, *_ = report
    clean = read_csv(out / "tables" / "clean_synthetic_small_resnet_none.csv")
    assert [r["layout"] for r in clean] == ["all_shared", "47", "independent"]
    assert float(clean[0]["seg/miou"]) == pytest.approx(0.44)
    # all_shared over independent: seg (+10 % miou, +10 % pixel acc) = +10, normal 20 -> 19 = +5,
    # depth 0.50 -> 0.55 = -10 (lower is better); mean over tasks = 5/3 %
    assert float(clean[0]["gain avg (%)"]) == pytest.approx(5 / 3)
    assert float(clean[0]["gain normal (%)"]) == pytest.approx(5.0)

    points = {
        r["layout"]: r for r in read_csv(out / "tables" / "tradeoff_synthetic_small_resnet_pgd_eps8.csv")
    }
    assert set(points) == set(LAYOUTS)
    assert float(points["all_shared"]["clean gain (%)"]) == pytest.approx(5 / 3)
    # 47: seg (0.42/0.40 - 1) / 2 = +2.5, normal 0, depth (0.50-0.45)/0.50 = +10 -> 12.5/3
    assert float(points["47"]["clean gain (%)"]) == pytest.approx(12.5 / 3)
    assert float(points["independent"]["clean gain (%)"]) == pytest.approx(0.0)
    assert float(points["all_shared"]["DGBA avg (%)"]) == pytest.approx(-20.0)  # default eps: largest, 8/255
    assert float(points["independent"]["DGBA avg (%)"]) == pytest.approx(-10.0)


def test_transfer_matrix_values(report) -> None:
    out, _, _, store = report
    sets, _ = transfer_sets(load_records([store]), method="pgd", eps=parse_eps("8/255"))
    by_layout = {s.layout_name: s.matrix for s in sets}
    assert list(by_layout) == ["all_shared", "47", "independent"]  # by sharing, not by name
    shared = by_layout["all_shared"]
    assert list(shared) == ["seg", "normal", "depth"]
    assert shared["seg"]["seg"] == pytest.approx(-25.0) and shared["seg"]["normal"] == pytest.approx(-10.0)
    assert by_layout["47"]["depth"]["seg"] == pytest.approx(-6.0)
    assert by_layout["independent"]["normal"]["depth"] == pytest.approx(0.0)
    rows = read_csv(out / "tables" / "transfer_synthetic_small_resnet_none_pgd_eps8_all_shared.csv")
    assert float(rows[1]["seg (%)"]) == pytest.approx(-10.0)  # SINGLE(normal) row, seg column


def test_pngs_are_valid_images_and_printed(report) -> None:
    out, _, printed, _ = report
    pngs = sorted((out / "plots").glob("*.png"))
    names = [p.name for p in pngs]
    assert sum(n.startswith("transfer_") for n in names) == 6  # 3 layouts x 2 eps
    assert sum(n.startswith("eps_") for n in names) == 3  # pgd for 3 layouts (mim for 47: one eps, no curve)
    assert sum(n.startswith("tradeoff_") for n in names) == 1
    assert sum(n.startswith("example_") for n in names) == 1
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
        assert any(str(png) in line for line in printed)
    summary = (out / "summary.md").read_text()
    for png in pngs:
        assert f"plots/{png.name}" in summary


def test_missing_independent_skips_scatter_with_note(tmp_path: Path) -> None:
    store = tmp_path / "adv.jsonl"
    build_store(store, layouts=("all_shared", "47"))
    out = tmp_path / "out"
    assert main(["--store", str(store), "--out", str(out), "--method", "pgd", "--eps", "4/255"]) == 0
    assert not list((out / "plots").glob("tradeoff_*.png"))
    summary = (out / "summary.md").read_text()
    assert "no independent layout" in summary and "Not drawn" in summary
    # --method/--eps narrow the per-model figures: only the 4/255 heatmaps
    assert {p.name for p in (out / "plots").glob("transfer_*.png")} == {
        "transfer_synthetic_small_resnet_none_pgd_eps4_all_shared.png",
        "transfer_synthetic_small_resnet_none_pgd_eps4_47.png",
    }


def test_two_stores_side_by_side(tmp_path: Path) -> None:
    a, b = tmp_path / "study_a.jsonl", tmp_path / "study_b.jsonl"
    build_store(a, layouts=("all_shared", "independent"), study="transfer")
    build_store(b, layouts=("all_shared", "independent"), study="tradeoff")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--store",
                str(a),
                "--store",
                str(b),
                "--out",
                str(out),
                "--method",
                "pgd",
                "--eps",
                "0.0313725490196",
            ]
        )
        == 0
    )
    header, rows = read_md_table(out / "tables" / "rel_synthetic_small_resnet_none_pgd_eps8.md")
    assert header[:3] == ["store", "study", "layout"]
    assert [(r[0], r[1]) for r in rows] == [("study_a", "transfer")] * 10 + [("study_b", "tradeoff")] * 10
    points = read_csv(out / "tables" / "tradeoff_synthetic_small_resnet_pgd_eps8.csv")
    assert len(points) == 4 and {p["source"] for p in points} == {"study_a · transfer", "study_b · tradeoff"}

    only_b = tmp_path / "only_b"
    assert main(["--store", str(a), "--store", str(b), "--out", str(only_b), "--study", "tradeoff"]) == 0
    header, rows = read_md_table(only_b / "tables" / "rel_synthetic_small_resnet_none_pgd_eps8.md")
    assert header[0] == "layout" and len(rows) == 10  # one store and study left: no identity columns


def test_bad_input_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--store", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--store", "x.jsonl", "--out", str(tmp_path), "--eps", "eight"])
    assert not math.isnan(parse_eps("8/255"))


def test_messy_rows_do_not_break_the_report(tmp_path: Path) -> None:
    store_path = tmp_path / "messy.jsonl"
    store = ResultsStore(store_path)
    cfg = config("all_shared", "dgba", 8)
    store.append("k-empty", cfg, {})  # "ok" but no numbers at all
    # written on another machine: the absolute path is gone, the file sits in the store's examples/ folder
    write_example(tmp_path / "examples" / "moved.pt")
    moved = config("47", "dgba", 8)
    store.append("k-moved", moved, results("47", rel_task("dgba", 0.6, 8), "/elsewhere/examples/moved.pt"))
    bare = {"method": "pgd", "direction": "total", "eps": 8 / 255}  # most config fields missing
    store.append(
        "k-bare", bare, {"rel_task": {"seg": float("nan")}, "rel_avg": float("inf"), "example": "gone.pt"}
    )
    with store_path.open("a") as fh:
        fh.write('{"key": "k-cut", "status": "ok", "config": {')  # a crash mid-write
    out = tmp_path / "out"
    assert main(["--store", str(store_path), "--out", str(out)]) == 0
    text = (out / "tables" / "rel_synthetic_small_resnet_none_pgd_eps8.md").read_text()
    assert "| all_shared | 15 | DGBA | n/a | n/a | n/a | n/a |" in text
    summary = (out / "summary.md").read_text()
    assert "'gone.pt'" in summary and "not found" in summary  # the missing example file is reported
    assert "k-cut" not in summary
    assert len(list((out / "plots").glob("example_*.png"))) == 1


def test_seeds_of_a_cell_are_averaged_in_every_one_number_table(tmp_path: Path) -> None:
    """Three training seeds per cell: every table shows the mean over seeds, no table calls them a collision,
    and a position is flagged when any seed's model is."""
    store_path = tmp_path / "store" / "results.jsonl"
    store = ResultsStore(store_path)
    scale = {0: 0.8, 1: 1.0, 2: 1.2}  # seed -> multiplier of the attack effect; the mean is the seed-1 value
    for seed, factor in scale.items():
        for layout in LAYOUTS:
            for direction in DIRECTIONS:
                cfg = config(layout, direction, 8) | {
                    "train_seed": seed,
                    "model_id": f"id-{layout}-{seed}",
                    "checkpoint": f"/ckpt/{layout}-{seed}.ckpt",
                }
                rel = {t: factor * v for t, v in rel_task(direction, LAYOUTS[layout][2], 8).items()}
                row = results(layout, rel)
                row["clean"] = {
                    t: {m: v * (factor if t == "depth" else 1.0) for m, v in ms.items()}
                    for t, ms in LAYOUTS[layout][1].items()
                }
                if seed == 2 and layout == "47":
                    row["diagnostics"] = {"flags": ["gradient_masking"]}
                store.append(config_key(cfg), cfg, row)
    out = tmp_path / "out"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--store", str(store_path), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "rows for the same position" not in summary
    assert "different checkpoints" not in summary

    relative = read_csv(out / "tables" / "rel_synthetic_small_resnet_none_pgd_eps8.csv")
    dgba = {r["layout"]: r for r in relative if r["direction"] == "DGBA"}
    assert float(dgba["all_shared"]["avg (%)"]) == pytest.approx(-20.0)  # the seed-1 value is the mean
    assert dgba["all_shared"]["seeds"] == "3"
    assert "47 ⚠" in dgba  # one of its three seeds is flagged
    clean = {r["layout"]: r for r in read_csv(out / "tables" / "clean_synthetic_small_resnet_none.csv")}
    assert float(clean["all_shared"]["depth/abs_err"]) == pytest.approx(0.55)  # mean of 0.8, 1.0, 1.2 x 0.55
    points = {
        r["layout"]: r for r in read_csv(out / "tables" / "tradeoff_synthetic_small_resnet_pgd_eps8.csv")
    }
    assert float(points["all_shared"]["DGBA avg (%)"]) == pytest.approx(-20.0)
    assert "47 ⚠" in points
    sets, _ = transfer_sets(load_records([store_path]), method="pgd", eps=parse_eps("8/255"))
    shared = {s.layout_name: s.matrix for s in sets}["all_shared"]
    assert shared["seg"]["seg"] == pytest.approx(-25.0) and shared["seg"]["normal"] == pytest.approx(-10.0)
