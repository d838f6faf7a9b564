"""A damaged or hand-edited results store never crashes a reader, and failed rows never outlive a success."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.report import main as report_main
from mtl_robust.report.records import load_records
from tests.test_report import build_store, read_csv


def test_bad_lines_are_skipped_counted_once_and_never_cells(tmp_path: Path, caplog) -> None:
    path = tmp_path / "results.jsonl"
    store = ResultsStore(path)
    store.append("good", {"eps": 1}, {"rel_avg": -0.1})
    with path.open("ab") as fh:
        fh.write(
            b'{"key": "latin1", "status": "ok", "config": {"note": "caf\xe9"}, "results": {}}\n'
        )  # line 2
        fh.write(json.dumps({"key": ["not", "a", "string"], "status": "ok", "config": {}}).encode() + b"\n")
        fh.write(
            json.dumps({"key": "cfg-list", "status": "ok", "config": [1, 2], "results": {}}).encode() + b"\n"
        )
        fh.write(json.dumps({"key": "no-status", "config": {}, "results": {}}).encode() + b"\n")
        fh.write(
            json.dumps({"key": "bad-results", "status": "ok", "config": {}, "results": 3}).encode() + b"\n"
        )
        fh.write(b"[1, 2, 3]\n")
    store.append("after", {"eps": 2}, {"rel_avg": -0.2})
    with caplog.at_level(logging.WARNING, logger="mtl_robust.evaluation.store"):
        latest = store.latest()
    assert set(latest) == {"good", "after"}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "skipped 6 unreadable lines (first: line 2)" in warnings[0]
    assert "cfg-list" not in latest and latest["after"]["status"] == "ok"


def test_ok_supersedes_failed_in_any_order_and_resolved_jobs_vanish(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append("retried", {"eps": 1}, {}, status="failed", error="transient")
    store.append("retried", {"eps": 1}, {"rel_avg": -0.5})
    store.append("late-failure", {"eps": 2}, {"rel_avg": -0.4})
    store.append("late-failure", {"eps": 2}, {}, status="failed", error="a redundant retry that failed")
    job = {"study": "s", "checkpoint": "", "overrides": ["sharing=independent"]}
    store.append("job", job, {}, status="failed", error="trained nothing")
    assert store.resolve_failure("job", {"study": "s"}) and not store.resolve_failure("job", {"study": "s"})
    latest = store.latest()
    assert {k: r["status"] for k, r in latest.items()} == {"retried": "ok", "late-failure": "ok"}
    with pytest.raises(ValueError, match="status"):
        store.append("x", {}, {}, status="done")


def test_report_counts_only_real_cells_of_a_damaged_store(tmp_path: Path) -> None:
    path = tmp_path / "store" / "results.jsonl"
    build_store(path)  # one failed cell; another failed once and then succeeded
    with path.open("ab") as fh:
        fh.write(b"\xff\xfe garbage\n")
        fh.write(json.dumps({"key": 7, "status": "ok", "config": {}, "results": {}}).encode() + b"\n")
        fh.write(json.dumps({"key": "c", "status": "ok", "config": "pgd", "results": {}}).encode() + b"\n")
    records = load_records([path])
    assert sum(not r.ok for r in records) == 1
    out = tmp_path / "out"
    assert report_main(["--store", str(path), "--out", str(out)]) == 0
    header = (out / "summary.md").read_text().splitlines()[2]
    assert f"{len(records)} cells, {len(records) - 1} ok, 1 failed" in header


def test_independent_baseline_is_found_by_structure_not_name(tmp_path: Path) -> None:
    # The trade-off study names layouts by TreeMTL index: the independent one is "2" (sharing score 0).
    path = tmp_path / "store" / "results.jsonl"
    build_store(path)
    renamed = tmp_path / "store" / "by_index.jsonl"
    lines = path.read_text().splitlines()
    renamed.write_text(
        "\n".join(line.replace('"layout_name": "independent"', '"layout_name": "2"') for line in lines) + "\n"
    )
    assert '"layout_name": "2"' in renamed.read_text()
    for store, name in ((path, "independent"), (renamed, "2")):
        out = tmp_path / f"out-{name}"
        assert report_main(["--store", str(store), "--out", str(out)]) == 0
        points = {
            r["layout"]: r for r in read_csv(out / "tables" / "tradeoff_synthetic_small_resnet_pgd_eps8.csv")
        }
        assert float(points["all_shared"]["clean gain (%)"]) == pytest.approx(5 / 3)
        assert float(points[name]["clean gain (%)"]) == pytest.approx(0.0)
        assert list((out / "plots").glob("tradeoff_*.png"))
