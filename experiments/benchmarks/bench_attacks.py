"""Per-step cost of attack directions and of the attack machinery (CPU or GPU).

Measures, on one model and one batch, with repeats interleaved across variants and medians reported:
  * one attack step with DGBA vs TOTAL (target ratio <= 1.05: DGBA costs one backward pass like TOTAL),
  * the paper code's per-task-backward DGBA (`dgba_reference`) vs TOTAL (one backward per task),
  * one attack step (objective + input gradient + sign step + projection) vs a bare forward + input-gradient
    backward of the summed task losses (target <= 1.10), and a whole PGD call per step vs the same bare pass.

    python experiments/benchmarks/bench_attacks.py --batch 8 --size 64 --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_robust.attacks import PGD, project
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.models import build_model
from mtl_robust.tasks import build_task

TASK_CHANNELS = {"seg": 6, "normal": 3, "depth": 1}


def build(device: torch.device) -> tuple[nn.Module, dict, str]:
    tasks = {
        "seg": build_task("seg", num_classes=TASK_CHANNELS["seg"]),
        "normal": build_task("normal"),
        "depth": build_task("depth"),
    }
    model = build_model(backbone="small_resnet", tasks=dict(TASK_CHANNELS), layout="all_shared", seed=0)
    return model.to(device), tasks, "small_resnet all_shared (light heads), tasks seg/normal/depth"


def make_batch(n: int, size: int, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=gen)
    seg = torch.randint(0, TASK_CHANNELS["seg"], (n, size, size), generator=gen)
    seg[:, :2] = 255
    normal = F.normalize(torch.randn(n, 3, size, size, generator=gen), dim=1)
    depth = torch.rand(n, 1, size, size, generator=gen) + 0.5
    targets = {"seg": seg, "normal": normal, "depth": depth}
    return x.to(device), {k: v.to(device) for k, v in targets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5, help="steps of the whole-PGD timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, losses, model_name = build(device)
    x, targets = make_batch(args.batch, args.size, device)
    eps = 8 / 255

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    objectives = {}
    for direction in ("total", "dgba", "dgba_reference"):
        attack = PGD(eps, steps=10, direction=direction)
        objectives[direction] = (attack, attack.bind(model, x, targets, losses))

    def attack_step(direction: str) -> Callable[[], None]:
        attack, objective = objectives[direction]

        def run() -> None:
            ev = objective(x, 0)
            project(x + attack.alpha * ev.grad.sign(), x, eps)

        return run

    def bare() -> None:
        xg = x.detach().requires_grad_(True)
        preds = model(xg)
        total = sum(losses[t].loss(preds[t], targets[t]).sum() for t in targets)
        torch.autograd.grad(total, xg)

    def whole_pgd(direction: str) -> Callable[[], None]:
        attack = PGD(eps, steps=args.steps, direction=direction)
        return lambda: attack(model, x, targets, losses)

    variants: dict[str, Callable[[], None]] = {
        "bare fwd+bwd": bare,
        "step total": attack_step("total"),
        "step dgba": attack_step("dgba"),
        "step dgba_reference": attack_step("dgba_reference"),
        f"PGD-{args.steps} total": whole_pgd("total"),
        f"PGD-{args.steps} dgba": whole_pgd("dgba"),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with eval_mode(model):
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for key, fn in variants.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                elapsed = time.perf_counter() - start
                times[key].append(elapsed / args.steps if key.startswith("PGD") else elapsed)
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f"model: {model_name}; device {device}; threads {torch.get_num_threads()}")
    print(
        f"batch: {args.batch} x 3 x {args.size} x {args.size}; repeats {args.repeats} (interleaved), medians"
    )
    for key, value in med.items():
        suffix = " per step" if key.startswith("PGD") else ""
        print(f"  {key:<22s} {1000 * value:8.2f} ms{suffix}")
    ratios = [
        ("DGBA / TOTAL (one step)", med["step dgba"] / med["step total"], 1.05),
        ("DGBA per-task reference / TOTAL", med["step dgba_reference"] / med["step total"], None),
        ("attack step TOTAL / bare fwd+bwd", med["step total"] / med["bare fwd+bwd"], 1.10),
        ("attack step DGBA / bare fwd+bwd", med["step dgba"] / med["bare fwd+bwd"], 1.10),
        (
            f"PGD-{args.steps} TOTAL per step / bare",
            med[f"PGD-{args.steps} total"] / med["bare fwd+bwd"],
            1.10,
        ),
        (f"PGD-{args.steps} DGBA per step / bare", med[f"PGD-{args.steps} dgba"] / med["bare fwd+bwd"], 1.10),
    ]
    for label, ratio, target in ratios:
        verdict = "" if target is None else ("  ok" if ratio <= target else f"  ABOVE target {target}")
        print(f"  {label:<36s} {ratio:6.3f}{'' if target is None else f' (target <= {target})'}{verdict}")


if __name__ == "__main__":
    main()
