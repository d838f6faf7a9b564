"""LP reference: the closed-form sign step is the optimum of the linearised step LP (HiGHS via CVXPY)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_robust.attacks import APGD, PGD, MultiTaskObjective, build_direction, lp
from mtl_robust.attacks.lp import CrossCheckResult, closed_form_step, crosscheck, solve_step_lp
from tests.attack_stubs import TreeStub, make_batch, stub_losses, stub_tasks

torch.set_num_threads(1)
EPS = 8 / 255


def test_closed_form_step_by_hand():
    c = torch.tensor([1.0, -1.0, 2.0, -3.0, 0.0, 1.0], dtype=torch.float64)
    x0 = torch.tensor([0.5, 0.5, 0.98, 0.01, 0.5, 0.5], dtype=torch.float64)
    x = torch.tensor([0.5, 0.5, 0.98, 0.01, 0.5, 0.55], dtype=torch.float64)
    step = closed_form_step(c, x, x0, alpha=0.04, eps=0.06)
    # free +alpha, free -alpha, pixel bound 1, pixel bound 0, tie stays, ball bound x0 + eps.
    expected = torch.tensor([0.04, -0.04, 0.02, -0.01, 0.0, 0.01], dtype=torch.float64)
    torch.testing.assert_close(step, expected)


def test_solve_step_lp_by_hand():
    c = np.array([1.0, -1.0, 2.0, -3.0, 1.0])
    x0 = np.array([0.5, 0.5, 0.98, 0.01, 0.5])
    x = np.array([0.5, 0.5, 0.98, 0.01, 0.55])
    delta, value = solve_step_lp(c, x, x0, alpha=0.04, eps=0.06)
    np.testing.assert_allclose(delta, [0.04, -0.04, 0.02, -0.01, 0.01], atol=1e-9)
    assert value == pytest.approx(0.04 + 0.04 + 0.04 + 0.03 + 0.01, rel=1e-9)
    with pytest.raises(ValueError, match="eps-ball"):
        solve_step_lp(c, x + 0.2, x0, alpha=0.04, eps=0.06)


@pytest.mark.parametrize("seed", range(4))
def test_random_c_matches_on_every_coordinate(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 3000
    x0 = torch.rand(n, generator=gen)
    x = (x0 + (2 * torch.rand(n, generator=gen) - 1) * EPS).clamp(0, 1)
    # Magnitudes over many decades: tiny entries must still get the right sign step.
    c = torch.randn(n, generator=gen) * torch.logspace(-12, 2, n)[torch.randperm(n, generator=gen)]
    alpha = [EPS / 10, EPS, 2 * EPS][seed % 3]
    result = crosscheck(c, x, x0, alpha, EPS)
    assert isinstance(result, CrossCheckResult)
    assert result.gap <= 1e-6 and result.mismatched_coords == 0
    assert result.n_coords == n and not result.subsampled
    assert result.lp_objective == pytest.approx(result.closed_objective, rel=1e-6)


def test_bounds_ball_boundary_and_ties():
    n = 400
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, generator=gen) * 0.8 + 0.1
    x = x0.clone()
    x0[:100] = 0.0  # at the lower pixel bound
    x[:100] = 0.0
    x0[100:200] = 1.0  # at the upper pixel bound
    x[100:200] = 1.0
    x[200:250] = x0[200:250] + EPS  # on the ball boundary, both sides
    x[250:300] = x0[250:300] - EPS
    c = torch.randn(n, generator=gen)
    c[300:] = 0.0  # ties: any step is optimal
    for alpha in (EPS / 4, EPS, 3 * EPS):
        result = crosscheck(c, x, x0, alpha, EPS)
        assert result.gap <= 1e-6 and result.mismatched_coords == 0, (alpha, result)
    zero = crosscheck(torch.zeros(n), x, x0, EPS, EPS)
    assert zero.gap == 0.0 and zero.lp_objective == 0.0 and zero.mismatched_coords == 0


def _dgba_gradient(model, x, targets, direction="dgba"):
    d = build_direction(direction)
    obj = MultiTaskObjective(model, targets, stub_losses(), d, d.tasks_needed(list(targets)))
    model.eval()
    obj.init_state(x)
    return obj(x, 0).grad


@pytest.mark.parametrize("direction", ["dgba", "total", "sign_sum"])
def test_real_gradients_at_clean_point_and_later_iterate(direction):
    model, (x0, targets) = TreeStub(), make_batch(n=2, h=8, w=8)
    x0 = (x0 * 1.4 - 0.2).clamp(0, 1)  # plenty of pixels at the bounds
    c0 = _dgba_gradient(model, x0, targets, direction)
    assert crosscheck(c0, x0, x0, 2 * EPS, EPS).mismatched_coords == 0
    # A later PGD iterate sits partly on the ball boundary; check the next step from there.
    xk = PGD(EPS, alpha=EPS / 2, steps=3, direction=direction)(model, x0, targets, stub_losses())
    assert ((xk - x0).abs() >= EPS - 1e-6).any()
    ck = _dgba_gradient(model, xk, targets, direction)
    result = crosscheck(ck, xk, x0, EPS / 2, EPS)
    assert result.gap <= 1e-6 and result.mismatched_coords == 0


def test_subsampling_is_reported_and_reproducible():
    model, (x0, targets) = TreeStub(), make_batch(n=2, h=8, w=8)
    c = _dgba_gradient(model, x0, targets)
    a = crosscheck(c, x0, x0, EPS, EPS, max_coords=100, generator=torch.Generator().manual_seed(1))
    b = crosscheck(c, x0, x0, EPS, EPS, max_coords=100, generator=torch.Generator().manual_seed(1))
    assert a.subsampled and a.n_coords == 100 and a.n_total == c.numel()
    assert a.lp_objective == b.lp_objective and a.gap <= 1e-6
    full = crosscheck(c, x0, x0, EPS, EPS, max_coords=10**6)
    assert not full.subsampled and full.n_coords == c.numel()


def test_a_wrong_closed_form_is_caught(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(500, generator=gen)
    c = torch.randn(500, generator=gen)

    def no_ball(c, x, x0, alpha, eps, lo=0.0, hi=1.0):  # forgets the ball: over-steps when alpha > eps
        return torch.clamp(x + alpha * torch.sign(c), lo, hi) - x

    monkeypatch.setattr(lp, "closed_form_step", no_ball)
    result = crosscheck(c, x0, x0, 2 * EPS, EPS)
    assert result.gap > 1e-3 and result.mismatched_coords > 0


# ------------------------------------------------------------------------------------- Lightning callback
pl = pytest.importorskip("pytorch_lightning")


class _Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = TreeStub()
        self.tasks = stub_tasks()

    def validation_step(self, batch, batch_idx):
        x, targets = batch
        preds = self.model(x)
        return sum(self.tasks[t].loss(preds[t], targets[t]).mean() for t in self.tasks)

    test_step = validation_step


def _loader(n_batches=2):
    x, targets = make_batch(n=2 * n_batches, h=6, w=6)
    items = [(x[i], {t: v[i] for t, v in targets.items()}) for i in range(x.shape[0])]
    return torch.utils.data.DataLoader(items, batch_size=2)


def _trainer(callback):
    return pl.Trainer(
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
    )


def test_callback_logs_gap_under_inference_mode():
    from mtl_robust.lightning.lp_crosscheck import LPCrossCheck

    callback = LPCrossCheck(every_n_batches=1, max_coords=60, attack=APGD(EPS, steps=5, direction="dgba"))
    module = _Module()
    module.model.heads.train()  # the callback must give this mode back
    trainer = _trainer(callback)
    metrics = trainer.validate(module, dataloaders=_loader(), verbose=False)[0]
    assert metrics["lp/max_gap"] <= 1e-6
    assert metrics["lp/subsampled"] == 1.0 and metrics["lp/coords_checked"] == 120
    assert len(callback.results) == 2 and all(r.n_coords == 60 for r in callback.results)
    assert module.model.heads.training
    assert all(p.grad is None for p in module.model.parameters())
    test_cb = LPCrossCheck(every_n_batches=2, max_coords=None, direction="total", eps=EPS)
    out = _trainer(test_cb).test(_Module(), dataloaders=_loader(3), verbose=False)[0]
    assert len(test_cb.results) == 2 and out["lp/subsampled"] == 0.0 and out["lp/max_gap"] <= 1e-6


def test_callback_raises_on_gap(monkeypatch):
    import mtl_robust.lightning.lp_crosscheck as module_under_test

    real = module_under_test.crosscheck

    def broken(*args, **kwargs):
        r = real(*args, **kwargs)
        return CrossCheckResult(0.5, r.n_coords, r.n_total, r.subsampled, 3, 2.0, 1.0, 0.0, 0.0)

    monkeypatch.setattr(module_under_test, "crosscheck", broken)
    callback = module_under_test.LPCrossCheck(every_n_batches=1, max_coords=20, direction="dgba")
    with pytest.raises(RuntimeError, match="LP cross-check failed on val batch 0"):
        _trainer(callback).validate(_Module(), dataloaders=_loader(1), verbose=False)


def test_callback_argument_errors():
    from mtl_robust.lightning.lp_crosscheck import LPCrossCheck

    with pytest.raises(ValueError, match="not both"):
        LPCrossCheck(attack=PGD(EPS), direction="dgba")
    with pytest.raises(ValueError, match="every_n_batches"):
        LPCrossCheck(every_n_batches=0)


def test_lp_check_config_runs_during_validation_of_a_trained_model(tmp_path) -> None:
    from mtl_robust.jobs.train import train
    from tests.conftest import compose_config

    cfg = compose_config(
        "train", ["experiment=smoke", "lp_check=enabled", "callbacks.lp_check.max_coords=500"], tmp_path
    )
    result = train(cfg)
    assert result.metrics["lp/max_gap"] <= 1e-6
    assert result.metrics["lp/coords_checked"] > 0
