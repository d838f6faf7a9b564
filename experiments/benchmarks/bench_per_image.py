"""Cost and size of the per-image statistics side files.

1. Overhead per attack cell: one PGD-DGBA cell (10 steps) over the smoke study's validation images,
   evaluated without and with per-image statistics (computing them and writing the side file), repeats
   interleaved in one process, medians reported. Target ratio <= 1.05.
2. Side-file size per cell at smoke scale (64 images, 48x48, 8 classes, the trained-like predictions of
   a PGD run) and at paper scale: 654 NYUv2-like images at 321x321 with 40 classes, built from the real
   NYUv2 frames in ../shared/data (each copy with its own imperfect prediction, so that compression does
   not profit from repeats). Budget: <= 2 MB per cell.

    python experiments/benchmarks/bench_per_image.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from mtl_robust.attacks import PGD
from mtl_robust.data.synthetic import SyntheticScenes
from mtl_robust.evaluation.passes import run_pass
from mtl_robust.evaluation.per_image import concat_stats, per_image_stats, save_stats
from mtl_robust.models import build_model
from mtl_robust.tasks import build_task

REPO = Path(__file__).resolve().parents[2]
NYU = REPO.parent / "shared" / "data" / "nyuv2_adashare_samples"


def smoke_setup(num_images: int, size: int):
    tasks = {
        "seg": build_task("seg", num_classes=8),
        "normal": build_task("normal"),
        "depth": build_task("depth"),
    }
    model = build_model(
        backbone="small_resnet", tasks={"seg": 8, "normal": 3, "depth": 1}, layout="all_shared", seed=0
    )
    data = SyntheticScenes(num_images=num_images, height=size, width=size, split="val")
    return model.eval(), tasks, data


def timed_cell(model, tasks, data, per_image: bool, folder: Path) -> float:
    attack = PGD(eps=8 / 255, steps=10, direction="dgba").with_losses(tasks)
    start = time.perf_counter()
    result = run_pass(
        model, tasks, DataLoader(data, batch_size=64), attack=attack, progress=False, per_image=per_image
    )
    if per_image:
        save_stats(folder / "cell.npz", result.per_image, tasks)
    return time.perf_counter() - start


def paper_scale_file(folder: Path, num_images: int = 654, size: int = 321) -> Path:
    """Per-image statistics of `num_images` NYUv2-like images (40 classes) with imperfect predictions."""
    ids = sorted(p.stem for p in (NYU / "seg").glob("*.png"))
    if not ids:
        raise SystemExit(f"no NYUv2 samples under {NYU}; the paper-scale size needs them")
    tasks = {
        "seg": build_task("seg", num_classes=40),
        "normal": build_task("normal"),
        "depth": build_task("depth"),
    }
    frames = []
    for i in ids:
        seg = torch.from_numpy(np.array(Image.open(NYU / "seg" / f"{i}.png"), dtype=np.int64))
        rgb = np.array(Image.open(NYU / "normal_mask" / f"{i}.png"), dtype=np.float32)
        invalid = (rgb == 255).all(-1)
        normal = torch.from_numpy(rgb / 127.5 - 1.0).permute(2, 0, 1)
        normal[:, torch.from_numpy(invalid)] = 0
        depth = torch.from_numpy(np.load(NYU / "depth" / f"{i}.npy").astype(np.float32))[None]
        resize = lambda t: F.interpolate(t[None].float(), size=(size, size), mode="nearest")[0]  # noqa: E731
        frames.append((resize(seg[None])[0].long(), resize(normal), resize(depth)))
    gen = torch.Generator().manual_seed(0)
    parts = []
    for start in range(0, num_images, 16):
        batch = [frames[(start + k) % len(frames)] for k in range(min(16, num_images - start))]
        seg = torch.stack([b[0] for b in batch])
        normal, depth = torch.stack([b[1] for b in batch]), torch.stack([b[2] for b in batch])
        n = len(batch)
        # A prediction that is right on most pixels, confuses some with other classes, and is blurred.
        logits = 4.0 * F.one_hot(seg.clamp(0, 39), 40).permute(0, 3, 1, 2).float()
        logits = logits + 2.5 * torch.randn(n, 40, size, size, generator=gen).clamp(0) ** 2
        pred_normal = normal + 0.4 * torch.randn(n, 3, size, size, generator=gen)
        pred_depth = depth * (1 + 0.15 * torch.randn(n, 1, size, size, generator=gen))
        parts.append(
            {
                "seg": per_image_stats(tasks["seg"], logits, seg),
                "normal": per_image_stats(tasks["normal"], pred_normal, normal),
                "depth": per_image_stats(tasks["depth"], pred_depth, depth),
            }
        )
    return save_stats(folder / "paper.npz", concat_stats(parts), tasks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tasks, data = smoke_setup(args.images, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        times: dict[bool, list[float]] = {False: [], True: []}
        timed_cell(model, tasks, data, True, folder)  # warm-up
        for _ in range(args.repeats):
            for per_image in (False, True):
                times[per_image].append(timed_cell(model, tasks, data, per_image, folder))
        base, with_stats = statistics.median(times[False]), statistics.median(times[True])
        print(
            f"attack cell: PGD-DGBA 10 steps, {args.images} images {args.size}x{args.size}, "
            f"{args.threads} thread(s), {args.repeats} interleaved repeats (medians)"
        )
        print(f"  without per-image statistics: {base:8.3f} s")
        print(f"  with per-image statistics:    {with_stats:8.3f} s")
        print(f"  ratio: {with_stats / base:.3f} (target <= 1.05)")
        smoke = (folder / "cell.npz").stat().st_size
        print(
            f"side file at smoke scale ({args.images} images, 8 classes): {smoke / 1024:.1f} KiB per cell "
            f"({smoke / args.images:.0f} B per image)"
        )
        if not args.skip_paper:
            paper = paper_scale_file(folder).stat().st_size
            print(
                f"side file at paper scale (654 images 321x321, 40 classes, NYUv2 frames): "
                f"{paper / 2**20:.2f} MiB per cell ({paper / 654:.0f} B per image; budget 2 MB)"
            )


if __name__ == "__main__":
    main()
