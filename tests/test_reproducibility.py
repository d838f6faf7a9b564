"""Same command, same numbers: a tiny pipeline run twice (plain, then under joblib) from empty logs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtl_robust.data.synthetic import invalid_fractions, render_scenes
from mtl_robust.evaluation.frame import load_frame
from mtl_robust.evaluation.reproducibility import compare_stores
from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.attack import weights_id
from mtl_robust.jobs.pipeline import training_key
from mtl_robust.jobs.report import main as report_main
from mtl_robust.lightning.module import load_module
from tests.conftest import compose_config, run_entry_point

TINY = ["experiment=smoke", "logger=none", "pipeline.eps=[8/255]", "attack.steps=1", "eval.examples=0"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    roots = [tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")]
    for root, extra in zip(roots, ([], ["-m", "launcher=joblib", "hydra.launcher.n_jobs=1"])):
        proc = run_entry_point("mtl_robust.pipeline", [*extra, *TINY], root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return tuple(root / "logs" / "results" / "pipeline.jsonl" for root in roots)


def test_same_command_plain_and_under_joblib_gives_bit_identical_rows(two_runs) -> None:
    a, b = two_runs
    assert compare_stores(a, b) == []
    rows = list(ResultsStore(a).latest().values())
    assert len(rows) == 5
    for row in rows:
        cfg, res = row["config"], row["results"]
        assert cfg["deterministic"] is True and cfg["seed"] == 0 and cfg["train_seed"] == 0
        assert (a.parent / res["per_image"]["adv"]).is_file() and (
            a.parent / res["per_image"]["clean"]
        ).is_file()


def test_comparison_notices_a_changed_number(two_runs, tmp_path: Path) -> None:
    a, _ = two_runs
    lines = a.read_text().splitlines()
    row = json.loads(lines[-1])
    row["results"]["rel_avg"] += 1e-12
    changed = tmp_path / "pipeline.jsonl"
    changed.write_text("\n".join(lines[:-1] + [json.dumps(row)]) + "\n")
    shutil.copytree(a.parent / "per_image", tmp_path / "per_image")
    problems = compare_stores(a, changed)
    assert len(problems) == 1 and "rel_avg" in problems[0]


def test_model_id_hashes_the_weights_not_the_checkpoint_file(two_runs) -> None:
    a, b = two_runs
    ckpts = [next((store.parent.parent / "checkpoints").glob("*.ckpt")) for store in (a, b)]
    file_hashes = [hashlib.sha256(c.read_bytes()).hexdigest() for c in ckpts]
    assert file_hashes[0] != file_hashes[1]  # run directories and timestamps inside differ
    modules = [load_module(c) for c in ckpts]
    assert weights_id(modules[0]) == weights_id(modules[1])
    first = next(iter(modules[1].model.parameters()))
    first.data.view(-1)[0] += 1e-6
    assert weights_id(modules[0]) != weights_id(modules[1])


def test_training_thread_count_is_part_of_the_cache_key(tmp_path: Path) -> None:
    keys = {
        n: training_key(compose_config("pipeline", ["experiment=smoke", f"train_num_threads={n}"], tmp_path))
        for n in (1, 2)
    }
    assert keys[1] != keys[2]


def test_report_and_frame_from_the_store_and_from_damaged_or_old_stores(two_runs, tmp_path: Path) -> None:
    a, _ = two_runs
    frame = load_frame(a)
    assert len(frame) == 5 and {"seed", "direction", "eps", "rel_avg", "per_image_adv"} <= set(frame.columns)
    assert frame["clean.seg.miou"].notna().all()

    assert report_main(["--store", str(a), "--out", str(tmp_path / "ok")]) == 0
    summary = (tmp_path / "ok" / "summary.md").read_text()
    assert "## Paired comparisons" in summary and "DGBA − TOTAL" in summary
    # the tiny model learns nothing: flagged undertrained (⚠)
    assert "| all_shared ⚠ | DGBA | 1 |" in summary and "n/a |" not in summary.split("## Paired")[0]

    # A damaged copy: one side file truncated, one deleted; the report names both and still writes.
    damaged = tmp_path / "damaged"
    shutil.copytree(a.parent, damaged)
    rows = list(ResultsStore(damaged / "pipeline.jsonl").latest().values())
    truncated = damaged / rows[0]["results"]["per_image"]["adv"]
    truncated.write_bytes(truncated.read_bytes()[:50])
    missing = damaged / rows[1]["results"]["per_image"]["adv"]
    missing.unlink()
    assert report_main(["--store", str(damaged / "pipeline.jsonl"), "--out", str(tmp_path / "d")]) == 0
    text = (tmp_path / "d" / "summary.md").read_text()
    assert f"{truncated.name} is truncated or damaged" in text and f"{missing.name} is missing" in text

    # An old store: rows without per-image references still report, with mean ± std and no CI.
    old = tmp_path / "old.jsonl"
    lines = []
    for line in a.read_text().splitlines():
        row = json.loads(line)
        row["results"].pop("per_image", None)
        lines.append(json.dumps(row))
    old.write_text("\n".join(lines) + "\n")
    assert report_main(["--store", str(old), "--out", str(tmp_path / "old")]) == 0
    text = (tmp_path / "old" / "summary.md").read_text()
    assert "without CIs" in text and "no CI (no per-image statistics)" in text


def test_synthetic_scenes_carry_nyuv2_like_invalid_regions() -> None:
    seeds = [(0, 1, i) for i in range(48)]
    masked = render_scenes(seeds, 64, 64, ("seg", "normal", "depth"), invalid_regions=True)
    plain = render_scenes(seeds, 64, 64, ("seg", "normal", "depth"))
    rates = invalid_fractions(masked)
    assert 0.10 <= rates["seg"] <= 0.21 and 0.23 <= rates["normal"] <= 0.40 and 0.01 <= rates["depth"] <= 0.2
    assert invalid_fractions(plain) == {"seg": 0.0, "depth": 0.0, "normal": 0.0}
    assert np.array_equal(masked["x"], plain["x"])  # the masks come from their own stream: same scenes
    keep = masked["seg"] != 255
    assert np.array_equal(masked["seg"][keep], plain["seg"][keep])


def test_rows_of_one_trained_model_count_as_one_seed(two_runs, tmp_path: Path) -> None:
    """Two runs that ended up with the same model (same train_seed) must not pass for two seeds."""
    a, _ = two_runs
    lines = a.read_text().splitlines()
    copies = []
    for line in lines:
        row = json.loads(line)
        row["key"] += "-copy"
        row["config"]["seed"] = 7  # another run seed, but the model was trained with seed 0
        copies.append(json.dumps(row))
    store = a.parent / "duplicated.jsonl"
    store.write_text("\n".join(lines + copies) + "\n")
    assert report_main(["--store", str(store), "--out", str(tmp_path / "dup")]) == 0
    text = (tmp_path / "dup" / "summary.md").read_text()
    assert "| all_shared ⚠ | DGBA | 1 |" in text and "several rows for seed 0 of the same cell" in text
