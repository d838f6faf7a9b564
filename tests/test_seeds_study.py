"""The 3-seed smoke study end to end: rows per seed, per-image files, seeds as a table axis, and a DGBA vs
TOTAL verdict per cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtl_robust.evaluation.store import ResultsStore
from tests.conftest import run_entry_point


@pytest.mark.slow
def test_seeds_study_reports_dgba_vs_total_with_cis(study_root: Path) -> None:
    tmp_path = study_root
    proc = run_entry_point("mtl_robust.pipeline", ["experiment=study_seeds_smoke"], tmp_path, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "logs" / "results" / "seeds_smoke.jsonl"
    rows = list(ResultsStore(store).latest().values())
    assert rows and all(r["status"] == "ok" for r in rows)
    # 3 seeds x 2 layouts x 2 budgets x 5 directions, each with its per-image statistics.
    assert len(rows) == 60
    assert {r["config"]["train_seed"] for r in rows} == {0, 1, 2}
    assert all((store.parent / r["results"]["per_image"]["adv"]).is_file() for r in rows)
    summary = (tmp_path / "logs" / "reports" / "seeds_smoke" / "summary.md").read_text()
    section = summary.split("### Paired comparison: DGBA vs TOTAL", 1)[1].split("###", 1)[0]
    lines = [line for line in section.splitlines() if "DGBA − TOTAL" in line]
    assert len(lines) == 4  # one per layout and eps
    # A verdict, or none because a model is flagged (undertrained, masking: it is then marked).
    verdicts = ("DGBA stronger", "TOTAL stronger", "no significant difference", "excluded: flagged model")
    assert all(any(v in line for v in verdicts) and "| 3 |" in line for line in lines)
    assert "Holm over all" in section and "paired comparisons of this report" in section
    # Seeds are an axis of the per-position tables: a mean over 3 seeds, not 58 collision notes.
    assert "rows for the same position" not in summary
    rel = summary.split("## Relative change under attack", 1)[1].split("\n## ", 1)[0]
    assert "| seeds | avg std (%) |" in rel
