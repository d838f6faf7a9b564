"""The threat-model smoke study as configured: both undefended layouts, each attacked under L-inf 8/255 and
L2 0.75 in every direction (the config is checked here; the study itself is run by hand)."""

from __future__ import annotations

from mtl_robust.jobs.pipeline import attack_list
from mtl_robust.planning.sweep import compose_job, expand_jobs
from mtl_robust.values.budget import format_eps, parse_budget
from mtl_robust.values.norm import Norm

STUDY = "experiment=study_threat_models_smoke"


def test_the_study_sweeps_both_layouts_each_under_both_norms() -> None:
    jobs = expand_jobs(["-m", STUDY])
    assert sorted(next(o for o in job if o.startswith("sharing=")) for job in jobs) == [
        "sharing=all_shared",
        "sharing=branch_at_2",
    ]
    for job in jobs:
        cfg = compose_job(job)
        assert cfg.hydra.mode.name == "MULTIRUN"  # `python -m mtl_robust.pipeline STUDY` sweeps too
        cells = attack_list(cfg, ["seg", "normal", "depth"])
        by_norm: dict[str, set[str]] = {}
        for config, direction in cells:
            norm = str(Norm.parse(config.get("norm")))
            by_norm.setdefault(f"{norm} {format_eps(parse_budget(config['eps']), norm)}", set()).add(
                direction
            )
        directions = {"single:seg", "single:normal", "single:depth", "total", "dgba", "minmax"}
        assert by_norm == {"linf 8/255": directions, "l2 0.75": directions}, by_norm
