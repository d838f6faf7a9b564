"""eval.precision: bf16 (and fp16) vs float32 on one model and one batch, in one process.

Prints, for a trained checkpoint (`--ckpt`, else a randomly initialised small_resnet) on synthetic images:
  * per task, the relative change (%) under PGD-DGBA at each precision and the largest difference to float32
    in percentage points,
  * the time of one PGD step at each precision and with channels_last memory format, as a ratio to
    float32 (repeats interleaved, medians).

    python experiments/benchmarks/bench_precision.py --ckpt <.ckpt> --experiment study_fast_at_smoke
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mtl_robust.attacks import PGD
from mtl_robust.attacks.precision import with_precision
from mtl_robust.evaluation.passes import run_pass
from mtl_robust.evaluation.relative import compare
from mtl_robust.lightning.module import load_module

try:  # run as a script from the repository root or as a module
    from experiments.benchmarks.bench_attacks import build, make_batch
except ImportError:  # pragma: no cover
    from bench_attacks import build, make_batch  # type: ignore[no-redef]


def experiment_batch(experiment: str, size: int, device: torch.device) -> tuple[torch.Tensor, dict]:
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    from mtl_robust.planning.sweep import compose_job

    datamodule = instantiate(compose_job([f"experiment={experiment}"]).data)
    x, targets = next(iter(DataLoader(datamodule.dataset("val"), batch_size=size)))
    return x.to(device), {t: v.to(device) for t, v in targets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", default=None)
    parser.add_argument(
        "--experiment", default=None, help="take the images from this experiment's val split (e.g. smoke)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, tasks, name = build(device)
    if args.ckpt:
        module = load_module(args.ckpt, device).to(device)
        model, tasks, name = module.model, module.tasks, f"checkpoint {args.ckpt}"
    x, targets = make_batch(args.batch, args.size, device)
    if args.experiment:
        x, targets = experiment_batch(args.experiment, args.batch, device)
    elif "seg" in tasks:  # the checkpoint's class count
        targets["seg"] = targets["seg"].clamp_max(tasks["seg"].out_channels - 1)
    attack = PGD(8 / 255, steps=10, direction="dgba")
    changes = {}
    for precision in ("32", "bf16", "16"):
        wrapped = with_precision(model, precision)
        clean = run_pass(wrapped, tasks, [(x, targets)], device=device, progress=False)
        adv = run_pass(
            wrapped,
            tasks,
            [(x, targets)],
            attack=lambda m, xb, tb: attack(m, xb, tb, tasks),
            device=device,
            progress=False,
        )
        directions = {t: task.higher_is_better for t, task in tasks.items()}
        changes[precision] = compare(clean.metrics, adv.metrics, directions).per_task
    print(f"model: {name}; batch {tuple(x.shape)}; {device}; PGD-10 DGBA 8/255")
    for precision in ("bf16", "16"):
        diffs = {t: 100 * (changes[precision][t] - changes["32"][t]) for t in tasks}
        cells = "  ".join(
            f"{t} {100 * changes['32'][t]:+.2f}% -> {100 * changes[precision][t]:+.2f}%" for t in tasks
        )
        print(f"{precision:>4} vs 32: {cells}; largest difference {max(map(abs, diffs.values())):.2f} pp")

    variants = {
        "32": with_precision(model, "32"),
        "bf16": with_precision(model, "bf16"),
        "16": with_precision(model, "16"),
    }
    step = PGD(8 / 255, steps=1, direction="dgba")
    inputs = {"channels_last": x.contiguous(memory_format=torch.channels_last)}
    times: dict[str, list[float]] = {k: [] for k in [*variants, "channels_last"]}
    for _ in range(args.repeats):
        for key in times:
            wrapped = variants.get(key, variants["32"])
            if key == "channels_last":
                wrapped.to(memory_format=torch.channels_last)
            batch = inputs.get(key, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(wrapped, batch, targets, tasks)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
            if key == "channels_last":
                wrapped.to(memory_format=torch.contiguous_format)
    base = statistics.median(times["32"])
    print(
        "PGD step time / float32: "
        + "  ".join(f"{k} {statistics.median(v) / base:.2f}" for k, v in times.items() if k != "32")
        + f"  (float32 {1e3 * base:.1f} ms)"
    )


if __name__ == "__main__":
    main()
