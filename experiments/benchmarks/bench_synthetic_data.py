"""Throughput of the synthetic scene renderer on one CPU thread.

Times building the default train + val sets (512 + 128 images) at two resolutions, for the 3-task
(NYUv2-like) and 5-task (Taskonomy-like) variants, both precomputed in vectorised batches (``cache=True``)
and rendered per item on access (``cache=False``).

Run: ``python experiments/benchmarks/bench_synthetic_data.py [--repeats N] [--sizes 64 96]``.
"""

from __future__ import annotations

import os

# Single-threaded numbers: set before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from mtl_robust.data.synthetic import SyntheticScenes  # noqa: E402

TRAIN, VAL = 512, 128
TASK_SETS = {"3-task": ("seg", "normal", "depth"), "5-task": ("seg", "normal", "depth", "keypoints", "edges")}


def _time_cached(size: int, tasks: tuple[str, ...]) -> float:
    start = time.perf_counter()
    SyntheticScenes(TRAIN, size, size, tasks, split="train", cache=True)
    SyntheticScenes(VAL, size, size, tasks, split="val", cache=True)
    return time.perf_counter() - start


def _time_lazy(size: int, tasks: tuple[str, ...]) -> float:
    start = time.perf_counter()
    for split, n in (("train", TRAIN), ("val", VAL)):
        ds = SyntheticScenes(n, size, size, tasks, split=split, cache=False)
        for i in range(n):
            ds[i]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs is reported (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="square resolutions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    SyntheticScenes(4, 16, 16)  # warm-up: imports, first-call overheads

    print(f"train+val = {TRAIN}+{VAL} images, 1 thread, best of {args.repeats}")
    print(f"{'resolution':>10} {'tasks':>7} {'mode':>22} {'seconds':>8} {'images/s':>9}")
    for size in args.sizes:
        for name, tasks in TASK_SETS.items():
            for mode, fn in (("cache=True (batched)", _time_cached), ("cache=False (per item)", _time_lazy)):
                seconds = min(fn(size, tasks) for _ in range(args.repeats))
                rate = (TRAIN + VAL) / seconds
                print(f"{size:>4}x{size:<5} {name:>7} {mode:>22} {seconds:8.2f} {rate:9.0f}")


if __name__ == "__main__":
    main()
