"""One training step's gradient work for a gradient aggregator on the smoke model (all shared), measured
interleaved in one process: `ew` (one backward), one backward per task + UPGrad on the Jacobian (what
mtl_robust.mtl does), and torchjd's autogram engine (the Gramian from module hooks, UPGrad's weights from
it, one backward of the weighted losses).

    PYTHONPATH=. python experiments/benchmarks/bench_mtl_backward.py [--reps 20]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mtl_robust.config_location import CONFIG_PATH
from mtl_robust.jobs.train import build_module
from mtl_robust.mtl import build_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    from torchjd.aggregation import UPGradWeighting
    from torchjd.autogram import Engine

    with initialize_config_dir(config_dir=str(CONFIG_PATH), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "mtl=upgrad"])
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    dataset = datamodule.dataset("train")
    items = [dataset[i] for i in range(int(cfg.data.batch_size))]
    x = torch.stack([i[0] for i in items])
    targets = {t: torch.stack([i[1][t] for i in items]) for t in items[0][1]}
    model = module.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    method = build_method("upgrad", {}, list(module.tasks), module.loss_weights)
    hooked = copy.deepcopy(model)  # the engine's hooks see every forward of the model they are on
    engine = Engine(hooked, batch_dim=None)
    weighting = UPGradWeighting()

    def ew() -> None:
        module.weighted_loss(module.task_losses(model(x), targets)).backward()

    def per_task() -> None:
        method.aggregate_backward(module.task_losses(model(x), targets), params)

    def autogram() -> None:
        losses = torch.stack(list(module.task_losses(hooked(x), targets).values()))
        weights = weighting(engine.compute_gramian(losses))
        losses.backward(weights)

    runs = {"ew": ew, "per_task+upgrad": per_task, "autogram+upgrad": autogram}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(args.reps + 2):
        for name, run in runs.items():  # interleaved: load changes hit every variant alike
            model.zero_grad(set_to_none=True)
            hooked.zero_grad(set_to_none=True)
            start = time.perf_counter()
            run()
            if rep >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["ew"])
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:18s} median {1000 * median:7.1f} ms  ({median / base:.2f} x ew)")


if __name__ == "__main__":
    main()
