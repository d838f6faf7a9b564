"""The README's main command, run as a new user would (empty `logs/`), prints the README's table exactly.

Slow (it trains the default model: about 5 minutes on 2 idle cores). The README says where its numbers hold
(docs/reproducibility.md): an x86-64 CPU with AVX2, with the kernels the entry points pin by default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtl_robust.cpu_kernels import CHOICE_VARIABLE, PINNED
from tests.conftest import REPO_ROOT, run_entry_point

TITLE = "relative change under attack"


def printed_table(text: str) -> list[str]:
    """The lines of the relative-change table: its title line up to the first blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(TITLE))
    table = []
    for line in lines[start:]:
        if not line.strip():
            break
        table.append(line.rstrip())
    return table


def readme_table() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## What the main job prints", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "no code block under the README's 'What the main job prints'"
    return printed_table(block.group(1))


def test_readme_table_is_read_as_the_pipeline_prints_it() -> None:
    table = readme_table()
    assert table[0].startswith(TITLE) and table[1].split()[:3] == ["method", "direction", "eps"]
    rows = [line.split() for line in table[3:]]
    assert [r[1] for r in rows] == ["single:seg", "single:normal", "single:depth", "total", "dgba"]
    assert all(len(r) == 7 and all(re.fullmatch(r"-?\d+\.\d\d", v) for v in r[3:]) for r in rows)


@pytest.mark.slow
def test_readme_main_command_prints_the_readme_table(tmp_path: Path, monkeypatch) -> None:
    for name in (CHOICE_VARIABLE, *PINNED, "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(name, raising=False)  # the default kernels, as a new user gets them
    (tmp_path / "logs").mkdir()
    proc = run_entry_point("mtl_robust.pipeline", [], tmp_path, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert printed_table(proc.stdout) == readme_table()
