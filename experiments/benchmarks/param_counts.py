"""Parameter counts of the paper's models under different sharing layouts.

Models are built on PyTorch's meta device, so even the 130 M-parameter independent ResNet-34 costs no
memory; the counts are those of the real architecture (shared parameters counted once).

    python experiments/benchmarks/param_counts.py [--layouts 47 43 17]
(from the repository root, with the package installed or PYTHONPATH=.)
"""

from __future__ import annotations

import argparse

import torch

from mtl_robust.models import build_model

NYU_TASKS = {"seg": 40, "normal": 3, "depth": 1}


def _row(backbone: str | dict, head: str | dict, layout: object) -> tuple[str, int, int, int, int]:
    with torch.device("meta"):
        model = build_model(backbone, NYU_TASKS, layout, head=head)
    heads = sum(p.numel() for p in model.heads.parameters())
    return (
        model.layout.describe(),
        model.layout.sharing_score(),
        model.backbone_parameter_count(),
        heads,
        model.parameter_count(),
    )


def _table(title: str, backbone: str | dict, head: str | dict, layouts: list[object]) -> None:
    print(f"\n{title}")
    print(f"{'layout':>14} | {'sharing':>7} | {'backbone':>12} | {'heads':>12} | {'total':>12} | tree")
    for spec in layouts:
        tree, score, bb, heads, total = _row(backbone, head, spec)
        print(f"{spec!s:>14} | {score:>7} | {bb:>12,} | {heads:>12,} | {total:>12,} | {tree}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layouts", nargs="*", type=int, default=[], help="extra TreeMTL layout indices")
    args = parser.parse_args()
    layouts: list[object] = ["all_shared", "independent"] + [f"branch_at_{k}" for k in range(1, 5)]
    layouts += args.layouts
    print("NYUv2 tasks (output channels):", NYU_TASKS)
    _table("resnet34_deeplab + ASPP heads (hidden 1024)", "resnet34_deeplab", "aspp", layouts)
    _table("mobilenetv2 (output stride 8) + ASPP heads (hidden 1024)", "mobilenetv2", "aspp", layouts)
    _table("small_resnet (defaults) + light heads (hidden 64)", "small_resnet", "light", layouts)


if __name__ == "__main__":
    main()
