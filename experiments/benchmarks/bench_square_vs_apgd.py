"""Square vs APGD on trained (unmasked) models at equal cost: rel_avg of DGBA and TOTAL per budget.

Cost is counted as the planner counts it (`planning/cost.py`): an APGD step is one forward + one
input-gradient backward (one pass), a Square query one forward (a third of a pass). For each APGD budget of
K steps, Square runs with K queries (as many model calls) and with 3K queries (as many passes).

    python experiments/benchmarks/bench_square_vs_apgd.py --ckpt last.ckpt [--ckpt other.ckpt] \\
        --data experiment=study_reliability_smoke data.splits.val.num_images=32
"""

from __future__ import annotations

import argparse

import torch
from hydra.utils import instantiate

from mtl_robust.attacks import APGD, Square
from mtl_robust.evaluation.passes import run_pass
from mtl_robust.evaluation.relative import compare
from mtl_robust.jobs.attack import batches_factory
from mtl_robust.lightning.module import defense_name, load_module
from mtl_robust.planning.cost import cell_work
from mtl_robust.planning.sweep import compose_job


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", action="append", required=True)
    parser.add_argument("--data", nargs="*", default=["experiment=study_reliability_smoke"])
    parser.add_argument("--steps", type=int, nargs="*", default=[10, 20, 50])
    parser.add_argument("--directions", nargs="*", default=["dgba", "total"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = compose_job(args.data)
    datamodule = instantiate(cfg.data)
    batches = batches_factory(datamodule, "val", datamodule.eval_batch_size, None)
    eps = 8 / 255
    for path in args.ckpt:
        module = load_module(path)
        tasks = module.tasks
        clean = run_pass(module.model, tasks, batches(), progress=False)
        directions = {t: task.higher_is_better for t, task in tasks.items()}
        print(f"\n{path} (defense {defense_name(module.hparams.get('defense'))}), {clean.num_samples} images")
        print(f"{'direction':<10} {'budget':<22} {'passes':>7} {'rel_avg %':>10}")
        for direction in args.directions:
            for steps in args.steps:
                attacks = {f"APGD {steps} steps": APGD(eps, steps=steps, direction=direction, seed=0)}
                for queries in (steps, 3 * steps):
                    attacks[f"Square {queries} queries"] = Square(
                        eps, queries=queries, direction=direction, seed=0
                    )
                for label, attack in attacks.items():
                    method = "apgd" if isinstance(attack, APGD) else "square"
                    budget = {"method": method, "eps": eps, "steps": steps}
                    if method == "square":
                        budget = {"method": method, "eps": eps, "queries": attack.queries}
                    work = cell_work(budget, direction, list(tasks))
                    passes = work.backwards + work.forwards / 3  # a forward ~ a third of a pass
                    adv = run_pass(
                        module.model, tasks, batches(), attack=attack.with_losses(tasks), progress=False
                    )
                    change = compare(clean.metrics, adv.metrics, directions).average
                    print(f"{direction:<10} {label:<22} {passes:>7.1f} {100 * change:>10.2f}")


if __name__ == "__main__":
    main()
