"""Property tests: every method keeps the eps-ball around the clean x and the [0, 1] range."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl_robust.attacks import APGD, FGSM, MIM, PGD, Square
from tests.attack_stubs import TreeStub, make_batch, stub_losses

torch.set_num_threads(1)
MODEL = TreeStub()

METHODS = {
    "fgsm": lambda eps, steps, seed, d: FGSM(eps, direction=d),
    "pgd": lambda eps, steps, seed, d: PGD(eps, steps=steps, direction=d),
    "pgd_random": lambda eps, steps, seed, d: PGD(
        eps, steps=steps, random_start=True, seed=seed, direction=d
    ),
    "pgd_big_alpha": lambda eps, steps, seed, d: PGD(eps, alpha=3 * eps + 1e-3, steps=steps, direction=d),
    "mim": lambda eps, steps, seed, d: MIM(eps, steps=steps, direction=d),
    "apgd": lambda eps, steps, seed, d: APGD(eps, steps=steps, n_restarts=2, seed=seed, direction=d),
    "apgd_paper": lambda eps, steps, seed, d: APGD.paper(eps, steps=steps, direction=d),
    "apgd_revised": lambda eps, steps, seed, d: APGD.paper(eps, steps=steps, revised=True, direction=d),
    "square": lambda eps, steps, seed, d: Square(
        eps, queries=3 * steps, n_restarts=2, seed=seed, direction="total" if d == "sign_sum" else d
    ),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(sorted(METHODS)),
    direction=st.sampled_from(["total", "dgba", "single:normal", "sign_sum", "static_relative"]),
    n=st.integers(1, 3),
    h=st.integers(2, 6),
    w=st.integers(2, 6),
    eps=st.one_of(st.just(1.0), st.floats(0.0, 1.0, allow_nan=False)),
    steps=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    saturate=st.booleans(),
)
def test_ball_and_pixel_range_hold(method, direction, n, h, w, eps, steps, seed, saturate):
    x, targets = make_batch(n=n, h=h, w=w, seed=seed % 1000)
    if saturate:  # many pixels exactly at the range bounds
        x = (x * 3 - 1).clamp(0, 1)
    attack = METHODS[method](eps, steps, seed, direction)
    x_adv = attack(MODEL, x, targets, stub_losses())
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (x_adv - x).abs().max() <= eps + 1e-6
