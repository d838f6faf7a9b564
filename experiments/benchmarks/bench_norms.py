"""Threat models: step cost per norm, MINMAX-L2 against MINMAX-L-inf, closed forms against CVXPY, and (with
`--external`) the L2/L1 attacks against auto-attack's APGD-L2/L1 and torchattacks' PGDL2 on one objective.

Measured in one process, repeats interleaved, medians reported:
  * a PGD run and an APGD run (DGBA, `--steps` steps) under L-inf, L2 and L1 on the same model and batch:
    time per step and the ratio to L-inf (target <= 1.05: an L2/L1 step is one forward + one backward too),
  * `--ops BATCHxSIZE,...`: at each size, the norm's own step and projection ops alone (the L-inf sign step
    and clamp, the L2 normalisation and scaling, the L1 top-share step and the exact L1-and-box projection
    from a point outside the ball) against one forward + backward of the model on that batch,
  * the MINMAX step's solve at `--minmax-size` (3 tasks, Gaussian task vectors with a shared component):
    the L2 min-norm QP and the L1 game against the L-inf box LP (target: <= L-inf),
  * closed forms against the CVXPY reference (largest relative gap): the exact L1 ball-and-box projection
    (a QP), the L2 / L1 steepest steps (SOCP / LP), MINMAX-L2 (SOCP) on the batch's own task matrices,
  * `--external DIR[:DIR]`: directories holding auto-attack's `autoattack` package and torchattacks (a
    throwaway install, e.g. `pip install --target DIR torchattacks`; neither is a dependency of the project).
    Their attacks see the TOTAL objective as a two-class "classifier" whose cross-entropy is softplus(f):
    a per-sample increasing function of f, so their normalised / sparse-sign steps and their best-iterate
    choice are those of f itself. Reported: final mean f (ours / theirs) and time (ours / theirs).

CIFAR-sized defaults (32 x 32: the budgets of RobustBench and auto-attack, L-inf 8/255, L2 0.5, L1 12):

    python experiments/benchmarks/bench_norms.py --batch 4 --size 32 --repeats 5
    python experiments/benchmarks/bench_norms.py --external /tmp/ext:/tmp/ext/pkgs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from mtl_robust.attacks import APGD, PGD
from mtl_robust.attacks.lp import solve_norm_step
from mtl_robust.attacks.minmax import minmax_problems
from mtl_robust.attacks.minmax_l1 import solve_minmax_l1_batch, solve_minmax_l1_lp
from mtl_robust.attacks.minmax_l2 import solve_minmax_l2_batch, solve_minmax_l2_socp
from mtl_robust.attacks.minmax_solver import solve_minmax_batch
from mtl_robust.attacks.norms import project, steepest, step_count
from mtl_robust.values.norm import L1, L2, Norm

try:  # run as a script from the repository root or as a module
    from experiments.benchmarks.bench_attacks import build, make_batch
except ImportError:  # pragma: no cover
    from bench_attacks import build, make_batch  # type: ignore[no-redef]

BUDGETS = {"linf": 8 / 255, "l2": 0.5, "l1": 12.0}  # at 32 x 32 (3072 coordinates)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def budgets(size: int) -> dict[str, float]:
    """The CIFAR budgets scaled to the image (L2 with sqrt(D), L1 with D: docs/threat_models.md)."""
    ratio = (size * size) / (32 * 32)
    return {"linf": BUDGETS["linf"], "l2": BUDGETS["l2"] * ratio**0.5, "l1": BUDGETS["l1"] * ratio}


def step_costs(model, tasks, x, targets, args, device) -> None:
    eps = budgets(args.size)
    runs: dict[str, Callable[[], object]] = {}
    for name in ("linf", "l2", "l1"):
        pgd = PGD(eps[name], steps=args.steps, direction="dgba", norm=name)
        apgd = APGD(eps[name], steps=args.steps, direction="dgba", norm=name, seed=0)
        runs[f"pgd/{name}"] = lambda a=pgd: a(model, x, targets, tasks)
        runs[f"apgd/{name}"] = lambda a=apgd: a(model, x, targets, tasks)
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for repeat in range(args.repeats):
        # Interleaved, the order rotating each repeat, so no norm always runs first or last.
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            times[name].append(timed(runs[name], device))
    med = {k: statistics.median(v) / args.steps for k, v in times.items()}
    for method in ("pgd", "apgd"):
        base = med[f"{method}/linf"]
        cells = "   ".join(
            f"{n} {1e3 * med[f'{method}/{n}']:7.2f} ms ({med[f'{method}/{n}'] / base:.3f}x)"
            for n in ("linf", "l2", "l1")
        )
        print(f"{method:5s} step (dgba): {cells}   target <= 1.05x")


def ops_costs(model, args, device) -> None:
    """Per size: each norm's step + projection ops against a forward + backward, interleaved, minimum of the
    repeats (robust to other work on the machine)."""
    for spec in args.ops.split(","):
        batch, size = (int(part) for part in spec.lower().split("x"))
        base, ops = _ops_at(model, batch, size, args.repeats, device)
        cells = "   ".join(
            f"{Norm.parse(n).label} {1e3 * t:.2f} ms ({100 * t / base:.1f} %)" for n, t in ops.items()
        )
        print(
            f"step + projection ops at {batch} x 3 x {size} x {size} vs fwd+bwd {1e3 * base:.1f} ms: {cells}"
        )


def _ops_at(model, batch: int, size: int, repeats: int, device) -> tuple[float, dict[str, float]]:
    x, _ = make_batch(batch, size, device)
    calibrate(model, x)
    x_leaf = x.clone().requires_grad_(True)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)
    eps = budgets(size)

    def forward_backward() -> None:
        out = model(x_leaf)
        torch.autograd.grad(sum(o.float().pow(2).mean() for o in out.values()), x_leaf)

    def step_and_projection(name: str) -> Callable[[], object]:
        norm = Norm.parse(name)
        far = x + 2 * eps[name] * steepest(grad, norm)  # outside the ball: the projection has work to do
        return lambda: project(far + steepest(grad, norm), x, eps[name], norm)

    runs = {"fwd+bwd": forward_backward} | {name: step_and_projection(name) for name in eps}
    for fn in runs.values():
        fn()
    best = {k: float("inf") for k in runs}
    names = list(runs)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            best[name] = min(best[name], timed(runs[name], device))
    return best["fwd+bwd"], {name: best[name] for name in eps}


def minmax_solve(args, device) -> None:
    gen = torch.Generator().manual_seed(0)
    d = 3 * args.minmax_size * args.minmax_size
    shared = torch.randn(1, 1, d, generator=gen, dtype=torch.float64)
    a = (torch.randn(args.minmax_batch, 3, d, generator=gen, dtype=torch.float64) + 0.3 * shared).to(device)
    k = step_count(L1, d)
    solvers = {
        "linf": lambda: solve_minmax_batch(a, 1.0),
        "l2": lambda: solve_minmax_l2_batch(a),
        "l1": lambda: solve_minmax_l1_batch(a, k),
    }
    for fn in solvers.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in solvers}
    for _ in range(args.repeats):
        for name, fn in solvers.items():
            times[name].append(timed(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    gap = float(solve_minmax_l2_batch(a).gap.max())
    l1 = solve_minmax_l1_batch(a, k)
    print(
        f"MINMAX solve at {args.minmax_size}x{args.minmax_size} "
        f"(batch {args.minmax_batch}, 3 tasks, {d} coords): "
        f"L-inf LP {1e3 * med['linf']:.1f} ms, L2 QP {1e3 * med['l2']:.1f} ms "
        f"(L2 / L-inf = {med['l2'] / med['linf']:.3f}; target <= 1); L2 certified gap {gap:.2g}; "
        f"L1 game {1e3 * med['l1']:.1f} ms (L1 / L-inf = {med['l1'] / med['linf']:.3f}; k = {k}, "
        f"{l1.rounds} rounds), L1 certified gap {float(l1.gap.max()):.2g}"
    )


def closed_form_gaps(model, tasks, x, targets, args) -> None:
    import cvxpy as cp

    rng = np.random.default_rng(0)
    # The projection's squared distance against the QP's: positive = ours farther (CVXPY's interior-point
    # solution is feasible only to its tolerance, so the reference is not exact either).
    worst_projection = -float("inf")
    for _ in range(5):
        x0 = rng.random(200)
        v = rng.normal(size=200) * rng.choice([0.1, 1.0, 3.0])
        centre = torch.from_numpy(x0)[None]
        ours = (project(centre + torch.from_numpy(v)[None], centre, 4.0, L1) - centre)[0].numpy()
        d = cp.Variable(200)
        cp.Problem(
            cp.Minimize(cp.sum_squares(d - v)), [cp.norm(d, 1) <= 4.0, x0 + d >= 0, x0 + d <= 1]
        ).solve(solver="CLARABEL")
        excess = float(((ours - v) ** 2).sum() - ((d.value - v) ** 2).sum()) / float(
            ((d.value - v) ** 2).sum()
        )
        worst_projection = max(worst_projection, excess)
    worst_step = {"l2": 0.0, "l1": 0.0}
    for _ in range(5):
        c = rng.normal(size=2000)
        for norm in (L2, L1):
            closed = float(c @ steepest(torch.from_numpy(c)[None], norm)[0].numpy())
            _, reference = solve_norm_step(c, 1.0, norm)
            worst_step[norm.name] = max(worst_step[norm.name], abs(closed - reference) / abs(reference))
    problems = minmax_problems(PGD(0.5, steps=1, direction="minmax", norm="l2"), model, x, targets, tasks)
    worst_minmax, worst_l1 = 0.0, 0.0
    for a in problems:
        a = a[:, rng.permutation(a.shape[1])[: args.socp_coords]]
        ours = float(solve_minmax_l2_batch(torch.from_numpy(a)[None]).value[0])
        _, reference = solve_minmax_l2_socp(a)
        worst_minmax = max(worst_minmax, abs(ours - reference) / max(abs(reference), 1e-12))
        k = step_count(L1, a.shape[1])
        ours = float(solve_minmax_l1_batch(torch.from_numpy(a)[None], k).value[0])
        _, reference = solve_minmax_l1_lp(a, k)
        worst_l1 = max(worst_l1, abs(ours - reference) / max(abs(reference), 1e-12))
    print(
        f"largest gaps to CVXPY: L1 ball-and-box projection {worst_projection:.2g} (relative excess of the "
        "squared distance, 200 coords; <= 0: ours at least as close); "
        f"L2 step {worst_step['l2']:.2g}, L1 step {worst_step['l1']:.2g} (relative, 2000 coords); "
        f"MINMAX-L2 {worst_minmax:.2g}, MINMAX-L1 {worst_l1:.2g} (relative, the batch's task matrices on "
        f"{args.socp_coords} coords)"
    )


def calibrate(model: nn.Module, x: Tensor) -> None:
    """BatchNorm statistics from the batch: an untrained model in eval mode with its initial statistics
    (mean 0, variance 1) barely responds to its input, and every attack would end where it started."""
    model.train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # a cumulative average over the passes
        for _ in range(3):
            model(x)
    model.eval()


class AsClassifier(nn.Module):
    """The attack objective f(x) [N] as two logits [f, 0]: cross-entropy with label 1 is softplus(f)."""

    def __init__(self, objective) -> None:
        super().__init__()
        self.objective = objective
        self.model = objective.model

    def forward(self, x: Tensor) -> Tensor:
        losses = self.objective.step_losses(x, 0).ascent
        f = self.objective.direction.objective(losses, self.objective.valid, self.objective.state)
        return torch.stack([f, torch.zeros_like(f)], dim=1)


def external(model, tasks, x, targets, args, device) -> None:
    for path in args.external.split(":"):
        sys.path.insert(0, path)
    import torchattacks
    from autoattack.autopgd_base import APGDAttack

    eps = budgets(args.size)
    ours_total = PGD(eps["l2"], steps=1, direction="total")
    objective = ours_total.bind(model, x, targets, tasks)
    model.eval()
    objective.init_state(x)
    classifier = AsClassifier(objective).eval()
    labels = torch.ones(x.shape[0], dtype=torch.long, device=device)

    def f(x_adv: Tensor) -> float:
        with torch.no_grad():
            return float(classifier(x_adv)[:, 0].mean())

    pairs = {}
    for name, norm in (("APGD-L2", L2), ("APGD-L1", L1)):
        theirs = APGDAttack(classifier, n_iter=args.apgd_steps, norm=norm.label, eps=eps[norm.name], seed=0)
        ours = APGD(eps[norm.name], steps=args.apgd_steps, direction="total", norm=norm, seed=0)
        pairs[name] = (
            lambda a=ours: a(model, x, targets, tasks),
            lambda a=theirs: a.perturb(x, labels, best_loss=True),
        )
    pgd_l2 = torchattacks.PGDL2(
        classifier, eps=eps["l2"], alpha=eps["l2"] / 4, steps=args.apgd_steps, random_start=False
    )
    ours_pgd = PGD(eps["l2"], alpha=eps["l2"] / 4, steps=args.apgd_steps, direction="total", norm="l2")
    pairs["PGD-L2 (torchattacks PGDL2)"] = (
        lambda: ours_pgd(model, x, targets, tasks),
        lambda: pgd_l2(x, labels),
    )
    for name, (ours_fn, theirs_fn) in pairs.items():
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        results = {}
        for _ in range(args.repeats):
            for side, fn in (("ours", ours_fn), ("theirs", theirs_fn)):
                start = time.perf_counter()
                results[side] = fn()
                times[side].append(time.perf_counter() - start)
        f_ours, f_theirs = f(results["ours"]), f(results["theirs"])
        ratio = statistics.median(times["ours"]) / statistics.median(times["theirs"])
        print(
            f"{name}, {args.apgd_steps} steps, TOTAL objective: ours {f_ours:.4f}, theirs {f_theirs:.4f} "
            f"(final loss ratio {f_ours / f_theirs:.4f}); time ratio ours / theirs {ratio:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--apgd-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minmax-size", type=int, default=321)
    parser.add_argument("--minmax-batch", type=int, default=2)
    parser.add_argument("--socp-coords", type=int, default=3000)
    parser.add_argument("--external", default=None, help="DIR[:DIR] with autoattack and torchattacks")
    parser.add_argument("--skip", default="", help="comma list of: steps, minmax, gaps")
    parser.add_argument("--ops", default="", help="BATCHxSIZE,...: step + projection ops vs fwd+bwd")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--backbone",
        default="small_resnet",
        help="the model the ops are weighed against (resnet34_deeplab: the paper's, at --ops 2x321)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, tasks, model_name = build(device)
    if args.backbone != "small_resnet":
        from mtl_robust.models import build_model

        model = build_model(
            backbone=args.backbone, tasks={"seg": 6, "normal": 3, "depth": 1}, layout="all_shared", seed=0
        ).to(device)
        model_name = f"{args.backbone} all_shared, tasks seg/normal/depth"
    x, targets = make_batch(args.batch, args.size, device)
    calibrate(model, x)
    skip = set(args.skip.split(","))
    shape = f"batch {args.batch} x 3 x {args.size} x {args.size}"
    print(f"model: {model_name} (BatchNorm calibrated); {shape}; {args.threads} thread(s); {device}")
    print("budgets: " + ", ".join(f"{Norm.parse(k).label} {v:.4g}" for k, v in budgets(args.size).items()))
    if "steps" not in skip:
        step_costs(model, tasks, x, targets, args, device)
    if args.ops:
        ops_costs(model, args, device)
    if "minmax" not in skip:
        minmax_solve(args, device)
    if "gaps" not in skip:
        closed_form_gaps(model, tasks, x, targets, args)
    if args.external:
        external(model, tasks, x, targets, args, device)


if __name__ == "__main__":
    main()
