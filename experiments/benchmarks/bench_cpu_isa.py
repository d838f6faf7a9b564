"""What pinning the CPU kernels to AVX2 costs: a training step and an attack step, pinned vs native.

The libraries read their instruction-set setting once, before their first kernel, so each measurement runs in
a fresh worker process started with the variables set (pinned: mtl_robust.cpu_kernels.PINNED) or unset
(native). Workers alternate pinned, native, pinned, ... and each round's pinned/native ratio is taken from the
two workers of that round; the median over rounds is printed. On an AVX2-only CPU both sides run the same
kernels and the ratio is 1 by construction.

  * train step: forward, the three task losses, backward and an Adam step of the default model
    (small_resnet all_shared, batch 32 of 64x64 synthetic scenes) with the training thread count (2);
  * attack step: one PGD step with TOTAL and with DGBA (forward, per-task losses, input gradient, sign step,
    projection) on an evaluation batch of 64;
  * gemm: a 256x1024 by 1024x1024 matrix product (MKL), what a linear-layer-heavy model (ViT) leans on.

    python experiments/benchmarks/bench_cpu_isa.py [--rounds 5] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TASK_CHANNELS = {"seg": 6, "normal": 3, "depth": 1}


def worker(steps: int, threads: int) -> dict[str, float | str]:
    """Time the steps in this process (its kernels were chosen by the environment it was started with)."""
    import time

    import torch
    import torch.nn.functional as F

    from mtl_robust.attacks import PGD
    from mtl_robust.cpu_kernels import kernel_isa
    from mtl_robust.models import build_model
    from mtl_robust.tasks import build_task

    torch.set_num_threads(threads)
    tasks = {"seg": build_task("seg", num_classes=6), "normal": build_task("normal")}
    tasks["depth"] = build_task("depth")

    def batch(n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(n, 3, 64, 64, generator=gen)
        targets = {
            "seg": torch.randint(0, 6, (n, 64, 64), generator=gen),
            "normal": F.normalize(torch.randn(n, 3, 64, 64, generator=gen), dim=1),
            "depth": torch.rand(n, 1, 64, 64, generator=gen) + 0.5,
        }
        return x, targets

    def timed(step, n: int) -> float:
        for _ in range(3):  # warm-up: oneDNN builds its kernels on first use
            step()
        start = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - start) / n

    model = build_model(backbone="small_resnet", tasks=dict(TASK_CHANNELS), layout="all_shared", seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-4)
    x, targets = batch(32)

    def train_step() -> None:
        preds = model(x)
        loss = sum(task.loss(preds[t], targets[t]).mean() for t, task in tasks.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    result: dict[str, float | str] = {"isa": kernel_isa(), "train": timed(train_step, steps)}
    model.eval()
    xe, te = batch(64)
    for direction in ("total", "dgba"):
        attack = PGD(8 / 255, steps=1, direction=direction)
        result[f"attack_{direction}"] = timed(lambda a=attack: a(model, xe, te, tasks), steps)
    a, b = torch.rand(256, 1024), torch.rand(1024, 1024)
    result["gemm"] = timed(lambda: a @ b, steps)
    return result


def run_worker(pinned: bool, steps: int, threads: int) -> dict[str, float | str]:
    from mtl_robust.cpu_kernels import CHOICE_VARIABLE, PINNED

    env = {k: v for k, v in os.environ.items() if k not in PINNED and k != CHOICE_VARIABLE}
    env.update(PINNED if pinned else {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per worker and measure")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training runs with 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, args.threads)))
        return
    measures = ("train", "attack_total", "attack_dgba", "gemm")
    ratios: dict[str, list[float]] = {m: [] for m in measures}
    sides = ("pinned", "native")
    times: dict[str, dict[str, list[float]]] = {side: {m: [] for m in measures} for side in sides}
    isa = {}
    for _ in range(args.rounds):
        pinned = run_worker(True, args.steps, args.threads)
        native = run_worker(False, args.steps, args.threads)
        isa = {"pinned": pinned["isa"], "native": native["isa"]}
        for m in measures:
            ratios[m].append(pinned[m] / native[m])
            times["pinned"][m].append(pinned[m])
            times["native"][m].append(native[m])
        print("round:", " ".join(f"{m} {pinned[m] / native[m]:.3f}" for m in measures), flush=True)
    print(f"pinned: {isa['pinned']}\nnative: {isa['native']}")
    print(
        f"{args.rounds} rounds (pinned and native workers alternating), {args.steps} timed steps each, "
        f"{args.threads} torch threads; medians"
    )
    print(f"{'measure':<14} {'pinned ms':>10} {'native ms':>10} {'pinned/native':>14} {'range':>14}")
    for m in measures:
        p, n = statistics.median(times["pinned"][m]), statistics.median(times["native"][m])
        lo, hi = min(ratios[m]), max(ratios[m])
        print(
            f"{m:<14} {1000 * p:>10.1f} {1000 * n:>10.1f} {statistics.median(ratios[m]):>14.3f} "
            f"{f'{lo:.2f}-{hi:.2f}':>14}"
        )


if __name__ == "__main__":
    main()
