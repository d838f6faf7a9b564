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
    # 2 seeds x 2 layouts x 2 defenses, each under PGD (TOTAL, DGBA) and the ensemble
    assert len(rows) == 24 and all(r["status"] == "ok" for r in rows)
    ensembles = [r for r in rows if r["config"]["method"] == "ensemble"]
    assert len(ensembles) == 8
    for row in ensembles:
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
    # The smoke models learn: two seeds give DGBA vs TOTAL a verdict on at least one unflagged model; the
    # comparisons of training procedures (layouts, AT vs clean) need three seeds and get none.
    verdicts = {title: verdict_column(summary, title) for title in PAIRED}
    assert any(v.endswith(("stronger", "no significant difference")) for v in verdicts["DGBA vs TOTAL"])
    for title in ("layout vs layout", "AT vs clean model"):
        assert verdicts[title] and all(v.startswith(("too few seeds", "excluded:")) for v in verdicts[title])


PAIRED = ("DGBA vs TOTAL", "layout vs layout", "AT vs clean model")


def verdict_column(summary: str, title: str) -> list[str]:
    """The verdict (last) cell of every row of one paired-comparison table of the summary."""
    section = summary.split(f"### Paired comparison: {title}\n", 1)[1].split("\n### ", 1)[0]
    return [
        line.rstrip(" |").rsplit("|", 1)[1].strip()
        for line in section.splitlines()
        if line.startswith("| synthetic")
    ]
