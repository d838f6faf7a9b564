"""Parameter counts and the cost of one attack step: ViT-S/16 (DPT-like heads) vs ResNet-34-DeepLab (ASPP).

Both models are built for the same tasks and layout and attacked at the same input resolution; one PGD step
(the DGBA objective, its input gradient, a sign step and the projection) is timed for each, repeats
interleaved across the models, medians reported, and the ratio ViT / ResNet printed. A bare backbone
forward + input-gradient backward is timed the same way, to separate the trunks from the heads.

    python experiments/benchmarks/bench_backbones.py --batch 2 --size 224 --repeats 5 --threads 2
(from the repository root, with the package installed or PYTHONPATH=.)
"""

from __future__ import annotations

import argparse
import contextlib
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

TASK_CHANNELS = {"seg": 40, "normal": 3, "depth": 1}
MODELS = {
    "resnet34_deeplab + ASPP": ("resnet34_deeplab", "aspp", "caffe"),
    "vit_small + DPT": ("vit_small", "dpt", "imagenet"),
}


def make_batch(n: int, size: int, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=gen)
    targets = {
        "seg": torch.randint(0, TASK_CHANNELS["seg"], (n, size, size), generator=gen),
        "normal": F.normalize(torch.randn(n, 3, size, size, generator=gen), dim=1),
        "depth": torch.rand(n, 1, size, size, generator=gen) + 0.5,
    }
    return x.to(device), {k: v.to(device) for k, v in targets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="input side (ViT-S/16's native 224)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layout", default="all_shared")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tasks = {
        t: build_task(t, num_classes=c) if t == "seg" else build_task(t) for t, c in TASK_CHANNELS.items()
    }
    x, targets = make_batch(args.batch, args.size, device)
    eps = 8 / 255

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    models: dict[str, nn.Module] = {}
    variants: dict[str, Callable[[], None]] = {}
    for label, (backbone, head, norm) in MODELS.items():
        model = build_model(backbone, TASK_CHANNELS, args.layout, head=head, normalization=norm, seed=0)
        model = model.to(device)
        models[label] = model
        attack = PGD(eps, steps=10, direction="dgba")
        objective = attack.bind(model, x, targets, tasks)

        def step(attack=attack, objective=objective) -> None:
            ev = objective(x, 0)
            project(x + attack.alpha * ev.grad.sign(), x, eps)

        def trunk(model=model) -> None:
            xg = x.detach().requires_grad_(True)
            feats = model.forward_features(xg, ["seg"])["seg"]
            torch.autograd.grad(feats.square().mean(), xg)

        variants[f"{label}: attack step"] = step
        variants[f"{label}: trunk fwd+bwd"] = trunk

    print(f"device {device}; threads {torch.get_num_threads()}; layout {args.layout}; tasks {TASK_CHANNELS}")
    for label, model in models.items():
        heads = sum(p.numel() for p in model.heads.parameters())
        print(
            f"  {label:<26s} backbone {model.backbone_parameter_count():>12,}  heads {heads:>12,}  "
            f"total {model.parameter_count():>12,}  (output stride {model.output_stride})"
        )
    times: dict[str, list[float]] = {k: [] for k in variants}
    with contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(eval_mode(model))
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for key, fn in variants.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"batch {args.batch} x 3 x {args.size} x {args.size}; repeats {args.repeats} (interleaved), medians"
    )
    for key, value in med.items():
        print(f"  {key:<42s} {1000 * value:10.1f} ms")
    resnet, vit = MODELS
    for what in ("attack step", "trunk fwd+bwd"):
        ratio = med[f"{vit}: {what}"] / med[f"{resnet}: {what}"]
        print(f"  ratio ViT / ResNet, {what:<14s} {ratio:6.3f}")


if __name__ == "__main__":
    main()
