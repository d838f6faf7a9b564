"""MINMAX direction: step cost against DGBA, exact solver against the CVXPY/HiGHS LP, largest objective gap.

Measures in one process, repeats interleaved, medians reported:
  * one PGD step with MINMAX vs one with DGBA on the same model and batch (MINMAX: one backward per task plus
    a small LP per sample; DGBA: one backward),
  * the batched solver (`solve_minmax_batch`, whole batch) vs the primal LP in CVXPY/HiGHS (`solve_minmax_lp`,
    per sample) on the task matrices of that batch, and the largest relative objective gap (target <= 1e-6),
  * a badly scaled problem (three tasks' gradients scaled 1e-4, 1 and 1e3, 600 coordinates): time and gap.

Target: MINMAX step / DGBA step <= T + 1 (4 for three tasks).

    python experiments/benchmarks/bench_minmax.py --batch 4 --size 32 --repeats 5
    python experiments/benchmarks/bench_minmax.py --backbone resnet34_deeplab --batch 2 --size 321 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from mtl_robust.attacks import PGD
from mtl_robust.attacks.minmax import minmax_problems, relative_gap, solve_minmax, solve_minmax_lp
from mtl_robust.attacks.minmax_solver import solve_minmax_batch
from mtl_robust.models import build_model

try:  # run as a script from the repository root or as a module
    from experiments.benchmarks.bench_attacks import TASK_CHANNELS, build, make_batch
except ImportError:  # pragma: no cover
    from bench_attacks import TASK_CHANNELS, build, make_batch  # type: ignore[no-redef]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", default="small_resnet", help="small_resnet or resnet34_deeplab")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, tasks, model_name = build(device)
    if args.backbone != "small_resnet":
        model = build_model(
            backbone=args.backbone, tasks=dict(TASK_CHANNELS), layout="all_shared", head="aspp", seed=0
        ).to(device)
        model_name = f"{args.backbone} all_shared (ASPP heads), tasks seg/normal/depth"
    x, targets = make_batch(args.batch, args.size, device)
    eps = 8 / 255

    steps = {}
    for direction in ("dgba", "minmax"):
        attack = PGD(eps, steps=1, direction=direction)
        steps[direction] = lambda attack=attack: attack(model, x, targets, tasks)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            times[name].append(timed(fn))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    problems = minmax_problems(PGD(eps, steps=1, direction="minmax"), model, x, targets, tasks)
    stacked = torch.from_numpy(np.stack(problems)).to(device)  # every sample has all three tasks here
    batch_t, lp_t, gaps = [], [], []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        sol = solve_minmax_batch(stacked, eps)
        sync()
        batch_t.append(time.perf_counter() - start)
    for n, a in enumerate(problems):
        start = time.perf_counter()
        _, lp_value = solve_minmax_lp(a, eps)
        lp_t.append(time.perf_counter() - start)
        gaps.append(relative_gap(float(sol.value[n]), lp_value, a, eps))

    rng = np.random.default_rng(0)
    scaled = rng.normal(size=(3, 600)) * np.array([1e-4, 1.0, 1e3])[:, None]
    scaled_t = timed(lambda: solve_minmax(scaled, eps))
    scaled_sol = solve_minmax(scaled, eps)
    scaled_gap = relative_gap(scaled_sol.value, solve_minmax_lp(scaled, eps)[1], scaled, eps)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model: {model_name}; batch {args.batch} x 3 x {args.size} x {args.size}; {args.threads} thread(s); "
        f"{device}"
    )
    print(
        f"PGD step   dgba {1e3 * med['dgba']:8.1f} ms   minmax {1e3 * med['minmax']:8.1f} ms   "
        f"minmax / dgba = {med['minmax'] / med['dgba']:.2f} (target <= 4)"
    )
    batch, lp = statistics.median(batch_t), sum(lp_t)
    print(
        f"solver, whole batch ({problems[0].shape[0]} tasks x {problems[0].shape[1]} coords per sample): "
        f"{1e3 * batch:.1f} ms ({sol.rounds} active-set rounds), LP per sample summed {1e3 * lp:.1f} ms, "
        f"certified gap {float(sol.gap.max()):.3g}"
    )
    print(f"largest relative objective gap solver vs LP: {max(gaps):.3g} (target <= 1e-6)")
    print(
        f"badly scaled (1e-4, 1, 1e3; 600 coords): {1e3 * scaled_t:.1f} ms, gap to the LP {scaled_gap:.3g}, "
        f"certified {scaled_sol.gap:.3g}"
    )


if __name__ == "__main__":
    main()
