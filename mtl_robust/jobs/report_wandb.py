"""A study's report on wandb: one run of job type `report`, grouped with the study's training and attack
runs, holding every table of the report as a wandb Table, every figure as an image (each under its path
in the report folder: `tables/<name>`, `plots/<name>`) and summary.md as a panel (`summary`). Offline mode
works like for the other runs (`wandb sync` uploads it later)."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from mtl_robust.jobs.loggers import finish_wandb_run


def is_wandb(logger_cfg: DictConfig | None) -> bool:
    return bool(logger_cfg) and "_target_" in logger_cfg and "Wandb" in str(logger_cfg._target_)


def read_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    """A report CSV as (columns, rows): a column whose every filled cell is a number holds floats (so that
    wandb can sort and plot it), any other column text (a wandb column has one type: an id such as
    `5503e53a1acb` next to `123e4567` must stay text in both rows)."""
    with path.open(newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    if not lines:
        return [], []
    columns, body = lines[0], [line + [""] * (len(lines[0]) - len(line)) for line in lines[1:]]
    numeric = [all(_is_number(row[i]) for row in body if row[i] != "") for i in range(len(columns))]
    rows = [
        [(float(cell) if cell != "" else None) if numeric[i] else cell for i, cell in enumerate(row)]
        for row in body
    ]
    return columns, rows


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _key(path: Path, out: Path) -> str:
    """A file's wandb key: its path in the report folder, without the suffix (`tables/rel_...`)."""
    return path.relative_to(out).with_suffix("").as_posix()


def summary_panel(markdown: str) -> str:
    """summary.md as an HTML panel: the markdown text itself, escaped and kept as written (wandb renders
    HTML, not markdown, in run media)."""
    return f'<pre style="white-space: pre-wrap; font-family: monospace">{html.escape(markdown)}</pre>'


def log_report(logger_cfg: DictConfig, study: str, out: Path) -> dict[str, int]:
    """Log the report folder `out` as one `report` run of group `study`; returns what it logged."""
    import wandb

    finish_wandb_run()  # the last cell's run, when the sweep ran in this process
    logger = instantiate(
        logger_cfg,
        # the config's save_dir is a job's folder: there is none when the sweep has ended, so the report run
        # is written next to the report (WANDB_DIR, when set, wins, as for every run)
        save_dir=str(out),
        group=study,
        job_type="report",
        name=f"{study}-report",
        tags=["report"],
        reinit="finish_previous",
    )
    run = logger.experiment
    counts = {"tables": 0, "figures": 0, "summary": 0}
    for path in sorted(out.rglob("*.csv")):
        columns, data = read_table(path)
        if columns:
            run.log({_key(path, out): wandb.Table(columns, data)})
            counts["tables"] += 1
    for path in sorted(out.rglob("*.png")):
        run.log({_key(path, out): wandb.Image(str(path))})
        counts["figures"] += 1
    summary = out / "summary.md"
    if summary.is_file():
        run.log({"summary": wandb.Html(summary_panel(summary.read_text(encoding="utf-8")))})
        counts["summary"] = 1
    run.summary.update({"report_dir": str(out), **{f"report/{k}": v for k, v in counts.items()}})
    run.finish()
    return counts
