"""Cost of one adversarial training iteration relative to one clean training iteration (CPU or GPU).

One model and one batch; every variant runs the same training iteration code as the Lightning module
(forward, backward, Adam step), the repeats are interleaved across variants and medians reported, so all
ratios come from one process on one machine. Targets: FGSM-RS and N-FGSM <= 2.2x clean, Free AT <= 1.1x
per replay (TOTAL; DGBA adds one input-only backward per replay), PGD-AT (the paper's recipe: a clean step,
10 PGD steps, an adversarial step) ~12x. Also printed: the extra cost of the GradAlign regulariser and the
forward+backward passes each variant counts.

    python experiments/benchmarks/bench_fast_at.py --batch 16 --size 32 --repeats 15
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mtl_robust.attacks import PGD
from mtl_robust.lightning.fast_at import FastAdversarialTraining, parse_fast_at, weighted_mean_loss
from mtl_robust.lightning.training_cost import TrainingCost

try:  # run as a script from the repository root
    from bench_attacks import build, make_batch
except ImportError:  # imported as a module
    from experiments.benchmarks.bench_attacks import build, make_batch


class Variant:
    """A model copy with its own optimiser and pass counter, and one training iteration on it."""

    def __init__(self, name: str, model: nn.Module, tasks: dict, make_step: Callable) -> None:
        self.name = name
        self.model = copy.deepcopy(model).train()
        self.tasks = tasks
        self.weights = {t: 1.0 for t in tasks}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.cost = TrainingCost()
        self.cost.attach(self.model)
        self.iteration = make_step(self)
        self.times: list[float] = []

    def optimizer_step(self, loss: Tensor, *_parts: object) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def losses(self, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        preds = self.model(x)
        return weighted_mean_loss(
            {t: task.loss(preds[t], targets[t]) for t, task in self.tasks.items()}, self.weights
        )

    def timed(self, x: Tensor, targets: dict[str, Tensor], sync: Callable[[], None]) -> None:
        sync()
        self.cost.begin_iteration()
        start = time.perf_counter()
        self.iteration(x, targets)
        sync()
        self.times.append(time.perf_counter() - start)
        self.cost.end_iteration()


def clean(v: Variant) -> Callable:
    return lambda x, targets: v.optimizer_step(v.losses(x, targets))


def pgd_at(direction: str) -> Callable:
    def make(v: Variant) -> Callable:
        adversary = PGD(8 / 255, steps=10, direction=direction)

        def iteration(x: Tensor, targets: dict[str, Tensor]) -> None:
            v.optimizer_step(v.losses(x, targets))
            x_adv = adversary(v.model, x, targets, v.tasks)
            v.optimizer_step(v.losses(x_adv, targets))

        return iteration

    return make


def fast(spec: dict) -> Callable:
    def make(v: Variant) -> Callable:
        trainer = FastAdversarialTraining(parse_fast_at(spec), v.tasks, v.weights)
        return lambda x, targets: trainer.step(v.model, v.tasks, x, targets, v.optimizer_step)

    return make


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model, tasks, description = build(device)
    x, targets = make_batch(args.batch, args.size, device)
    variants = [Variant("clean", model, tasks, clean)]
    for d in ("total", "dgba"):
        variants += [
            Variant(f"pgd_at:{d}", model, tasks, pgd_at(d)),
            Variant(f"fgsm_rs:{d}", model, tasks, fast({"name": "fgsm_rs", "direction": d})),
            Variant(f"n_fgsm:{d}", model, tasks, fast({"name": "n_fgsm", "direction": d})),
            Variant(
                f"free_at per replay:{d}",
                model,
                tasks,
                fast({"name": "free_at", "replays": 1, "direction": d}),
            ),
            Variant(
                f"fgsm_rs+gradalign:{d}",
                model,
                tasks,
                fast({"name": "fgsm_rs", "grad_align": 0.2, "direction": d}),
            ),
        ]
    for v in variants:  # warm-up, not timed
        v.iteration(x, targets)
    for v in variants:
        v.cost = TrainingCost()
        v.cost.attach(v.model)
    for _ in range(args.repeats):
        for v in variants:
            v.timed(x, targets, sync)
    base = statistics.median(variants[0].times)
    medians = {v.name: statistics.median(v.times) for v in variants}
    threads = torch.get_num_threads()
    print(f"{description}; batch {args.batch} x {args.size}x{args.size}, {device}, {threads} threads")
    print(f"median of {args.repeats} interleaved iterations; clean iteration = {1000 * base:.1f} ms\n")
    print(f"{'variant':<28} {'ms/iter':>9} {'x clean':>8} {'passes/iter':>12}")
    for v in variants:
        passes = v.cost.as_dict()["passes_per_iteration"] / 2  # forwards + backwards, per forward+backward
        print(f"{v.name:<28} {1000 * medians[v.name]:>9.1f} {medians[v.name] / base:>8.2f} {passes:>12.1f}")
    for d in ("total", "dgba"):
        extra = medians[f"fgsm_rs+gradalign:{d}"] / medians[f"fgsm_rs:{d}"]
        print(f"\nGradAlign ({d}): {extra:.2f}x the FGSM-RS iteration it regularises")


if __name__ == "__main__":
    main()
