"""MINMAX direction: step cost against DGBA, exact solver against the CVXPY/HiGHS LP, largest objective gap.

Measures in one process, repeats interleaved, medians reported:
  * one PGD step with MINMAX vs one with DGBA on the same model and batch (MINMAX: one backward per task plus
    a small LP per sample; DGBA: one backward),
  * per sample, the exact solver (`solve_minmax`) vs the primal LP in CVXPY/HiGHS (`solve_minmax_lp`) on the
    task matrices of that batch, and the largest relative objective gap seen (target <= 1e-6).

    python experiments/benchmarks/bench_minmax.py --batch 4 --size 32 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mtl_robust.attacks import PGD
from mtl_robust.attacks.minmax import minmax_problems, relative_gap, solve_minmax, solve_minmax_lp

try:  # run as a script from the repository root or as a module
    from experiments.benchmarks.bench_attacks import build, make_batch
except ImportError:  # pragma: no cover
    from bench_attacks import build, make_batch  # type: ignore[no-redef]


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model, tasks, model_name = build(device)
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

    problems = minmax_problems(PGD(eps, steps=1, direction="minmax"), model, x, targets, tasks)
    closed_t, lp_t, gaps, iterations = [], [], [], []
    for a in problems:
        for _ in range(args.repeats):
            start = time.perf_counter()
            sol = solve_minmax(a, eps)
            closed_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            _, lp_value = solve_minmax_lp(a, eps)
            lp_t.append(time.perf_counter() - start)
        gaps.append(relative_gap(sol.value, lp_value, a, eps))
        iterations.append(sol.iterations)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model: {model_name}; batch {args.batch} x 3 x {args.size} x {args.size}; {args.threads} thread(s)"
    )
    print(
        f"PGD step   dgba {1e3 * med['dgba']:8.1f} ms   minmax {1e3 * med['minmax']:8.1f} ms   "
        f"minmax / dgba = {med['minmax'] / med['dgba']:.2f}"
    )
    closed, lp = statistics.median(closed_t), statistics.median(lp_t)
    print(
        f"per sample ({problems[0].shape[0]} tasks x {problems[0].shape[1]} coords): closed form "
        f"{1e3 * closed:.1f} ms ({max(iterations)} cutting-plane rounds at most), LP {1e3 * lp:.1f} ms, "
        f"LP / closed form = {lp / closed:.2f}"
    )
    print(f"largest relative objective gap closed form vs LP: {max(gaps):.3g} (target <= 1e-6)")


if __name__ == "__main__":
    main()
