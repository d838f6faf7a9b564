"""LP cross-check of the closed-form attack step on real gradients: largest gap and LP vs closed-form time.

For a trained checkpoint (or a freshly built model), on a few synthetic batches: the DGBA and TOTAL linear
objectives at the clean point (FGSM-sized step) and at a mid-attack PGD iterate (step box alpha, ball eps),
each solved as a CVXPY/HiGHS LP over all coordinates and compared with the closed-form step.

    python experiments/benchmarks/bench_lp.py [--ckpt path/to/last.ckpt] [--batches 3] [--batch-size 4]
"""

from __future__ import annotations

import argparse

import torch

from mtl_robust.attacks import PGD
from mtl_robust.attacks.lp import crosscheck
from mtl_robust.data.synthetic import SyntheticScenes
from mtl_robust.lightning.module import load_checkpoint
from mtl_robust.models import build_model
from mtl_robust.tasks import build_task


def load(ckpt: str | None):
    if ckpt:
        return load_checkpoint(ckpt)
    tasks = {
        "seg": build_task("seg", num_classes=8),
        "normal": build_task("normal"),
        "depth": build_task("depth"),
    }
    model = build_model("small_resnet", {t: k.out_channels for t, k in tasks.items()}, "branch_at_2", seed=0)
    return model.eval(), tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tasks = load(args.ckpt)
    data = SyntheticScenes(
        num_images=args.batches * args.batch_size, height=args.size, width=args.size, split="val"
    )
    eps = 8 / 255
    rows = []
    for b in range(args.batches):
        items = [data[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)]
        x, targets = torch.utils.data.default_collate(items)
        for direction in ("dgba", "total"):
            first = PGD(eps, alpha=eps, steps=1, direction=direction)
            x0, c = first.linear_objective(model, x, targets, tasks)
            rows.append((direction, "clean point", crosscheck(c, x0, x0, eps, eps)))
            mid = PGD(eps, steps=10, direction=direction)
            x_k = PGD(eps, steps=5, alpha=mid.alpha, direction=direction)(model, x, targets, tasks)
            _, c_k = mid.linear_objective(model, x_k, targets, tasks)
            rows.append((direction, "PGD iterate 5", crosscheck(c_k, x_k, x0, mid.alpha, eps)))
    print(
        f"\n{'direction':<10} {'point':<14} {'coords':>8} {'gap':>10} {'mismatch':>9} {'LP s':>8} "
        f"{'closed s':>9} {'LP/closed':>10}"
    )
    for direction, point, r in rows:
        print(
            f"{direction:<10} {point:<14} {r.n_coords:>8} {r.gap:>10.2e} {r.mismatched_coords:>9} "
            f"{r.lp_time:>8.3f} {r.closed_time:>9.5f} {r.lp_time / max(r.closed_time, 1e-9):>10.0f}"
        )
    worst = max(r.gap for _, _, r in rows)
    print(
        f"\nlargest relative objective gap: {worst:.3e} over {len(rows)} checks "
        f"(batch {args.batch_size}x3x{args.size}x{args.size}, all coordinates)"
    )


if __name__ == "__main__":
    main()
