"""What the quick ensemble's Square member adds to the smoke studies that run it (reliability, fast AT).

For each study, one job's config (its first layout, no defense), its model (as built for training; the cost
of a forward does not depend on the weights) and its evaluation images: one ensemble cell of the study's
own preset is evaluated with and without its Square members, interleaved, and the median seconds per cell,
their ratio and the extra seconds of the study's ensemble cells (cells x extra per cell) are printed.

    python experiments/benchmarks/bench_square_member.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from hydra.utils import instantiate

from mtl_robust.evaluation.ensemble_cell import ensemble_cell
from mtl_robust.evaluation.passes import run_pass
from mtl_robust.jobs.attack import batches_factory
from mtl_robust.jobs.pipeline import attack_list
from mtl_robust.jobs.runner import configure_threads
from mtl_robust.jobs.train import build_module
from mtl_robust.planning.sweep import compose_job, expand_jobs

STUDIES = ("study_reliability_smoke", "study_fast_at_smoke")


def without_square(attack: dict[str, Any]) -> dict[str, Any]:
    members = {k: v for k, v in attack["members"].items() if v.get("method") != "square"}
    return {**attack, "members": members}


def measure(study: str, repeats: int, threads: int | None) -> None:
    jobs = expand_jobs(["-m", f"experiment={study}"])
    cfg = compose_job([*jobs[0], "defense=none"])
    configure_threads(threads or cfg.get("num_threads"))
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule).eval()
    tasks = module.tasks
    split = cfg.get("split", "val")
    batch_size = cfg.eval.get("batch_size") or datamodule.eval_batch_size
    batches = batches_factory(datamodule, split, batch_size, None)
    cells = [a for a, d in attack_list(cfg, list(tasks)) if d == "ensemble"]
    per_job = len(cells)
    attack = cells[0]
    squares = {k: v for k, v in attack["members"].items() if v.get("method") == "square"}
    variants = {"without square": without_square(attack), "with square": attack}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, config in variants.items():
            cell = ensemble_cell(config, tasks)
            start = time.perf_counter()
            run_pass(module.model, tasks, batches(), attack=cell.attack, progress=False)
            times[name].append(time.perf_counter() - start)
    before, after = (statistics.median(times[name]) for name in variants)
    n_jobs = len(jobs)
    n_cells = n_jobs * per_job
    print(f"{study}: square members {squares}; {n_jobs} jobs x {per_job} ensemble cells")
    print(f"  per cell: {before:.2f} s without, {after:.2f} s with square (x{after / before:.2f})")
    extra = (after - before) * n_cells
    print(f"  the study's ensemble cells: +{extra:.0f} s (threads {torch.get_num_threads()})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--study", choices=STUDIES, action="append", help="default: both")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: the study's own setting)")
    args = parser.parse_args()
    for study in args.study or STUDIES:
        measure(study, args.repeats, args.threads or None)


if __name__ == "__main__":
    main()
