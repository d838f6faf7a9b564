"""The reliability smoke study end to end: ensemble rows with rules, members, wins and diagnostics, and the
report section comparing single attacks with the ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_entry_point


@pytest.mark.slow
def test_study_reliability_smoke(tmp_path: Path) -> None:
    proc = run_entry_point(
        "mtl_robust.pipeline", ["experiment=study_reliability_smoke"], tmp_path, timeout=3000
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "logs" / "results" / "reliability_smoke.jsonl"
    rows = [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)  # 3 layouts x 2 defenses x 2 eps
    for row in rows:
        ens = row["results"]["ensemble"]
        assert set(ens["rules"]) == {"joint", "task:seg", "task:normal", "task:depth"}
        assert len(ens["members"]) == 8  # dgba, total, single x 3, minmax, segpgd, square
        assert ens["members"]["square-dgba"]["queries_per_image"] == 40
        assert all(sum(w.values()) == row["results"]["num_samples"] for w in ens["wins"].values())
        # The row's main numbers are the joint selection's.
        assert row["results"]["rel_avg"] == pytest.approx(ens["rules"]["joint"]["rel_avg"])
        assert "flags" in row["results"]["diagnostics"]
        assert set(row["results"]["trivial_baseline"]) == {"seg", "normal", "depth"}
    summary = (tmp_path / "logs" / "reports" / "reliability_smoke" / "summary.md").read_text()
    assert "## Reliable evaluation: single attacks vs the ensemble" in summary
    assert "Members vs ensemble" in summary and "Per-task worst case" in summary
    assert "Gradient-masking and sanity diagnostics" in summary
    # One seed: no verdict about AT vs clean or layouts, whatever the numbers say.
    paired = summary.split("## Paired comparisons", 1)[1].split("\n## ", 1)[0]
    verdicts = [
        line.rstrip(" |").rsplit("|", 1)[1].strip()
        for line in paired.splitlines()
        if line.startswith("| synthetic")
    ]
    assert verdicts and all(v.startswith(("too few seeds", "excluded:")) for v in verdicts)
