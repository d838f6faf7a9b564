"""Masked models under the quick ensemble: what each member and the ensemble measure at 8/255.

Three versions of one network (the attack tests' tree stub: seg, normal, depth), evaluated the way an
ensemble cell is (dataset-level relative change of every task's metrics, mean over tasks, %):

* `plain`: the network itself;
* `quantised`: round(x * 8) / 8 in front (the diagnostics test's model): every input gradient is zero;
* `noisy`: Gaussian noise (sigma 0.1) added to the input at every forward, evaluation included: a
  randomised model whose gradients are samples of a random function.

Rows: the clean pass re-run with other random draws (the noisy model's floor), each member of
`conf/attack/ensemble_quick.yaml` on its own, the ensemble's per-image joint worst case, and Square alone
with larger query budgets (DGBA's objective), each proposal judged on one forward or, with
`--square-eot k ...`, on the mean of k (EOT). Seeds are fixed (the noise too). From the repository root
with PYTHONPATH=. (it imports the attack tests' stub and the diagnostics test's model):

    python experiments/benchmarks/bench_masked_models.py --images 32 --size 16
    python experiments/benchmarks/bench_masked_models.py --square-queries 1000 --square-eot 1 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from mtl_robust.attacks import Square
from mtl_robust.evaluation.ensemble_cell import ensemble_cell
from mtl_robust.evaluation.passes import run_pass
from mtl_robust.evaluation.relative import compare
from mtl_robust.tasks import build_tasks
from tests.attack_stubs import SEG_CLASSES, TreeStub, make_batch
from tests.test_diagnostics import Quantised  # the diagnostics test's masked model, as it is

PRESET = Path(__file__).resolve().parents[2] / "conf" / "attack" / "ensemble_quick.yaml"


class Noisy(nn.Module):
    """x + N(0, sigma^2) before the network at every forward, also in eval mode."""

    def __init__(self, inner: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.inner = inner
        self.sigma = sigma

    def forward(self, x: Tensor, tasks=None) -> dict[str, Tensor]:
        return self.inner((x + self.sigma * torch.randn_like(x)).clamp(0, 1), tasks=tasks)


def relative_avg(clean, adv, tasks) -> float:
    directions = {t: task.higher_is_better for t, task in tasks.items()}
    return 100 * compare(clean.metrics, adv.metrics, directions).average


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--square-queries", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--square-eot", type=int, nargs="*", default=[1], help="forwards per proposal")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)
    n_batches = args.images // args.batch
    batches = [make_batch(n=args.batch, h=args.size, w=args.size, seed=i) for i in range(n_batches)]
    preset = OmegaConf.to_container(OmegaConf.load(PRESET), resolve=True)
    preset["rules"] = ["joint"]
    models = {"plain": TreeStub(), "quantised": Quantised(TreeStub()), "noisy": Noisy(TreeStub())}
    table: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        torch.manual_seed(0)
        clean = run_pass(model, tasks, batches, progress=False)
        cell = ensemble_cell(preset, tasks)
        torch.manual_seed(1)
        run_pass(model, tasks, batches, attack=cell.attack, progress=False)
        row = cell.attack.row_results(clean)["ensemble"]
        torch.manual_seed(1)  # no attack, other random draws: the noisy model's floor (0 for the others)
        rerun = run_pass(model, tasks, batches, progress=False)
        column = {"no attack (re-run)": relative_avg(clean, rerun, tasks)}
        column |= {m: 100 * v["rel_avg"] for m, v in row["members"].items()}
        column["ensemble (joint)"] = 100 * row["rules"]["joint"]["rel_avg"]
        for queries in args.square_queries:
            for eot in args.square_eot:
                square = Square(
                    preset_eps(preset), queries=queries, direction="dgba", seed=0, eot_samples=eot
                )
                torch.manual_seed(1)
                adv = run_pass(model, tasks, batches, attack=square.with_losses(tasks), progress=False)
                label = f"square-dgba {queries} queries" + (f", eot {eot}" if eot != 1 else "")
                column[label] = relative_avg(clean, adv, tasks)
        table[name] = column
    rows = list(next(iter(table.values())))
    size = f"{args.images} images {args.size}x{args.size}"
    print(f"rel_avg (%) at 8/255, {size}, tree stub (seg, normal, depth)")
    print(f"{'attack':<34}" + "".join(f"{m:>12}" for m in models))
    for r in rows:
        print(f"{r:<34}" + "".join(f"{table[m][r]:>12.2f}" for m in models))


def preset_eps(preset: dict) -> float:
    from mtl_robust.values.budget import parse_budget

    return parse_budget(preset["eps"], "eps")


if __name__ == "__main__":
    main()
