"""Evaluation passes: clean and adversarial metrics, per-sample loss averaging, mode restore, bad input."""

from __future__ import annotations

import pytest
import torch

from mtl_robust.evaluation.passes import cached_pass, run_pass
from mtl_robust.models import build_model
from mtl_robust.tasks import build_task


def setup():
    tasks = {"seg": build_task("seg", num_classes=4), "depth": build_task("depth")}
    model = build_model("small_resnet", {t: k.out_channels for t, k in tasks.items()}, "all_shared", seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    targets = {"seg": torch.randint(0, 4, (6, 32, 32), generator=g), "depth": torch.rand(6, 1, 32, 32) + 0.5}
    targets["depth"][0] = 0.0  # a sample without any valid depth pixel
    return (
        model,
        tasks,
        [(x[:3], {t: v[:3] for t, v in targets.items()}), (x[3:], {t: v[3:] for t, v in targets.items()})],
    )


def test_losses_average_samples_with_valid_pixels_and_mode_is_restored() -> None:
    model, tasks, batches = setup()
    model.train()
    result = run_pass(model, tasks, batches, progress=False)
    assert model.training
    model.eval()
    with torch.no_grad():
        depth = torch.cat([tasks["depth"].loss(model(x)["depth"], t["depth"]) for x, t in batches])
    assert result.losses["depth"] == pytest.approx(float(depth[1:].mean()), rel=1e-5)
    assert result.num_samples == 6
    assert set(result.metrics["seg"]) == {"miou", "pixel_acc"}


def test_attack_is_applied_and_cached_results_round_trip(tmp_path) -> None:
    model, tasks, batches = setup()
    seen = []

    def attack(m, x, targets):
        seen.append(x.shape[0])
        return (x + 0.05).clamp(0, 1)

    adv = run_pass(model, tasks, batches, attack=attack, progress=False, keep_example=True)
    assert seen == [3, 3] and adv.example is not None
    clean, hit = cached_pass(tmp_path / "clean.json", lambda: run_pass(model, tasks, batches, progress=False))
    again, hit_again = cached_pass(tmp_path / "clean.json", lambda: pytest.fail("recomputed"))
    assert not hit and hit_again and again.metrics == clean.metrics and again.losses == clean.losses


def test_non_finite_inputs_fail_clearly() -> None:
    model, tasks, batches = setup()
    batches[1][0][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        run_pass(model, tasks, batches, progress=False)


def test_mode_of_every_submodule_comes_back_even_when_the_attack_raises() -> None:
    model, tasks, batches = setup()
    model.train()
    model.branches.eval()  # e.g. a frozen backbone under training heads: must come back exactly like that
    before = {n: m.training for n, m in model.named_modules()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen_modes = []

    def failing_attack(m, x, targets):
        seen_modes.append(any(sub.training for sub in m.modules()))
        raise RuntimeError("attack broke")

    with pytest.raises(RuntimeError, match="attack broke"):
        run_pass(model, tasks, batches, attack=failing_attack, progress=False)
    assert seen_modes == [False]  # the attack saw the whole model in eval mode
    assert {n: m.training for n, m in model.named_modules()} == before
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
