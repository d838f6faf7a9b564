"""Gradient-masking and sanity checks of an evaluated model (AutoAttack's checks, Carlini et al.'s list).

Each check is a named flag; a model that trips one is evaluated with attacks it may fool, so its numbers
overstate robustness. All measures use the paper's relative change (negative = worse) on a few batches.

* ``zero_input_gradients:<task>``: more than `zero_grad_limit` of the input-gradient entries of the task's
  loss are exactly zero (shattered / non-differentiable gradients).
* ``best_loss_decreased``: APGD's returned point scores a lower objective than the best it had recorded
  (randomness or a broken best-iterate bookkeeping).
* ``larger_eps_weaker``: PGD at 2 eps hurts less than at eps.
* ``more_steps_weaker``: APGD with 4x the steps hurts less than with the base steps.
* ``noise_stronger_than_attack``: uniform noise in the same eps-ball hurts more than PGD.
* ``large_eps_not_worst:<task>``: APGD at eps = 1 (any image reachable) does not bring the task's relative
  change below `large_eps_limit` (by default -25%). Bounded metrics cannot fall below -100% and a weakly
  trained model has little left to lose, so the bar is low: it catches attacks that cannot move at all.

Under L2 or L1 (`norm`) every probe attacks in that norm, the noise is a random point of that ball and the
"any image reachable" radius is the norm of the all-ones perturbation (sqrt(D) for L2, D for L1).

A shortfall within `tolerance` (absolute, in relative-change units) does not count: the checks are about
gross failures, not noise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.attacks import APGD, PGD
from mtl_robust.attacks.model_call import forward_tasks
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.norms import norms_of, random_start
from mtl_robust.evaluation.passes import Batch, PassResult, run_pass
from mtl_robust.evaluation.relative import compare
from mtl_robust.files import atomic_write_text
from mtl_robust.values.budget import parse_budget
from mtl_robust.values.norm import LINF, Norm

FLAG_NAMES = (
    "zero_input_gradients",
    "best_loss_decreased",
    "larger_eps_weaker",
    "more_steps_weaker",
    "noise_stronger_than_attack",
    "large_eps_not_worst",
)


@dataclass
class Diagnostics:
    flags: list[str] = field(default_factory=list)
    zero_grad_fraction: dict[str, float] = field(default_factory=dict)
    measures: dict[str, float] = field(default_factory=dict)  # rel_avg per probe attack
    large_eps_rel_task: dict[str, float] = field(default_factory=dict)
    eps: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def zero_gradient_fraction(
    model: nn.Module, tasks: Mapping[str, Any], x: Tensor, targets: Mapping[str, Tensor]
) -> dict[str, float]:
    """Per task: share of exactly-zero entries of d(sum of losses)/dx over samples with valid pixels."""
    out = {}
    with eval_mode(model), torch.enable_grad():
        for name, task in tasks.items():
            x_leaf = x.detach().clone().requires_grad_(True)
            loss = task.loss(forward_tasks(model, x_leaf, [name])[name].float(), targets[name])
            has_valid = task.valid_count(targets[name]) > 0
            if not bool(has_valid.any()):
                continue
            (grad,) = torch.autograd.grad(loss.sum(), x_leaf, allow_unused=True)
            grad = torch.zeros_like(x_leaf) if grad is None else grad
            out[name] = float((grad[has_valid] == 0).float().mean())
    return out


def _best_loss_decreased(
    model: nn.Module,
    tasks: Mapping[str, Any],
    x: Tensor,
    targets: Mapping[str, Tensor],
    eps: float,
    steps: int,
    norm: Norm = LINF,
) -> bool:
    attack = APGD(eps, steps=steps, direction="total", seed=0, norm=norm)
    result = attack.run(model, x, targets, tasks, record=True)
    recorded = torch.stack([r.objective for r in result.history]).amax(dim=0)
    # The returned point, re-scored from scratch, must reach the best objective the attack recorded.
    rescored = attack.score(model, x, targets, tasks, result.x_adv)
    return bool((rescored.cpu() < recorded - 1e-4 * recorded.abs().clamp_min(1.0)).any())


def _noise_attack(
    eps: float, seed: int, norm: Norm = LINF
) -> Callable[[nn.Module, Tensor, dict[str, Tensor]], Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def attack(model: nn.Module, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        noise_x = random_start(x.detach().cpu(), eps, norm, generator)
        return noise_x.to(x.device)

    return attack


def diagnose(
    model: nn.Module,
    tasks: Mapping[str, Any],
    batches: Callable[[], Iterable[Batch]],
    eps: float,
    *,
    steps: int = 10,
    max_batches: int = 1,
    device: str | torch.device = "cpu",
    tolerance: float = 0.005,
    zero_grad_limit: float = 0.5,
    large_eps_limit: float = -0.25,
    seed: int = 0,
    norm: str | Norm = "linf",
) -> Diagnostics:
    """Run every check on the first `max_batches` batches; see the module doc for the flags."""
    device = torch.device(device)
    norm = Norm.parse(norm)

    def few() -> list[Batch]:
        return list(itertools.islice(batches(), max_batches))

    def measure(attack: Callable | None) -> PassResult:
        return run_pass(model, tasks, few(), attack=attack, device=device, progress=False)

    clean = measure(None)  # on the same few batches as the probes
    directions = {t: task.higher_is_better for t, task in tasks.items()}

    def rel(result: PassResult) -> tuple[float, dict[str, float]]:
        change = compare(clean.metrics, result.metrics, directions)
        return change.average, change.per_task

    report = Diagnostics(eps=float(eps))
    x, targets = few()[0]
    x, targets = x.to(device), {t: v.to(device) for t, v in targets.items()}
    report.zero_grad_fraction = zero_gradient_fraction(model, tasks, x, targets)
    report.flags += [
        f"zero_input_gradients:{t}" for t, v in report.zero_grad_fraction.items() if v > zero_grad_limit
    ]
    if _best_loss_decreased(model, tasks, x, targets, eps, steps, norm):
        report.flags.append("best_loss_decreased")

    # The radius from which any image in [0, 1] is reachable: the norm of the all-ones perturbation.
    reach = float(norms_of(torch.ones_like(x[:1]), norm)[0])
    probes = {
        "pgd": PGD(eps, steps=steps, direction="total", norm=norm),
        "pgd_2eps": PGD(min(2 * eps, reach), steps=steps, direction="total", norm=norm),
        "apgd": APGD(eps, steps=steps, direction="total", seed=seed, norm=norm),
        "apgd_4x_steps": APGD(eps, steps=4 * steps, direction="total", seed=seed, norm=norm),
        "apgd_eps1": APGD(reach, steps=steps, direction="total", seed=seed, norm=norm),
    }
    per_task_large: dict[str, float] = {}
    for name, attack in probes.items():
        average, per_task = rel(measure(attack.with_losses(tasks)))
        report.measures[name] = average
        if name == "apgd_eps1":
            per_task_large = per_task
    report.measures["noise"], _ = rel(measure(_noise_attack(eps, seed, norm)))
    m = report.measures
    if m["pgd_2eps"] > m["pgd"] + tolerance:
        report.flags.append("larger_eps_weaker")
    if m["apgd_4x_steps"] > m["apgd"] + tolerance:
        report.flags.append("more_steps_weaker")
    if m["noise"] < m["pgd"] - tolerance:
        report.flags.append("noise_stronger_than_attack")
    report.large_eps_rel_task = per_task_large
    report.flags += [
        f"large_eps_not_worst:{t}" for t, v in per_task_large.items() if not v <= large_eps_limit
    ]
    return report


def cached_diagnostics(cache_file: Path, compute: Callable[[], Diagnostics]) -> dict[str, Any]:
    """A model's diagnostics as JSON, computed once per (model, data, settings) and reused from the cache."""
    if cache_file.exists():
        return json.loads(cache_file.read_text())
    result = compute().to_json()
    atomic_write_text(cache_file, json.dumps(result, indent=2))
    return result


def diagnostics_for_rows(
    settings: Mapping[str, Any] | None,
    model: nn.Module,
    tasks: Mapping[str, Any],
    batches: Callable[[], Iterable[Batch]],
    device: torch.device,
    cache_dir: Path,
    identity: Mapping[str, Any],
) -> dict[str, Any]:
    """`{"diagnostics": {...}}` for every row of a model when `settings.enabled`, else `{}`."""
    if not settings or not settings.get("enabled"):
        return {}
    from mtl_robust.evaluation.store import config_key

    eps = parse_budget(settings.get("eps", "8/255"), "diagnostics.eps")
    steps, max_batches = int(settings.get("steps", 10)), int(settings.get("max_batches", 1))
    norm = Norm.parse(settings.get("norm"))
    keyed = {**identity, "eps": eps, "steps": steps, "max_batches": max_batches}
    if not norm.is_default:  # L-inf stays out of the key: cached diagnostics keep theirs
        keyed["norm"] = str(norm)
    result = cached_diagnostics(
        Path(cache_dir) / f"diagnostics_{config_key(keyed)}.json",
        lambda: diagnose(
            model, tasks, batches, eps, steps=steps, max_batches=max_batches, device=device, norm=norm
        ),
    )
    return {"diagnostics": result}
