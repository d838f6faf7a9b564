"""The L1 step and projection in their faster forms (an unsorted `topk` for the k-th largest value, secant
rounds and a sort of the few breakpoints left for the projection's threshold) give what the sorted forms
gave: the references below are the previous implementations, kept here to compare against."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import mtl_robust.attacks.norms as norms
from mtl_robust.attacks.norms import project_l1_box, sparse_step


def sorted_walk_projection(v: Tensor, x0: Tensor, eps: float) -> Tensor:
    """The previous projection: all 2D breakpoints sorted, the budget curve walked from the top."""
    shape, flat, x = v.shape, v.flatten(1), x0.flatten(1)
    n = flat.shape[0]
    room = torch.where(flat > 0, 1.0 - x, x).clamp_min(0.0)
    size = flat.abs()
    eps_t = torch.as_tensor(eps, dtype=flat.dtype).expand(n)
    boxed = torch.minimum(size, room)
    over = boxed.sum(dim=1) > eps_t
    points = torch.cat([size, size - room], dim=1)
    entering = torch.cat([torch.ones_like(size), -torch.ones_like(size)], dim=1)
    points, order = points.sort(dim=1, descending=True)
    entering = entering.gather(1, order)
    active = entering.cumsum(dim=1)
    gaps = points[:, :-1] - points[:, 1:]
    budget_at = torch.cat([torch.zeros_like(points[:, :1]), (active[:, :-1] * gaps).cumsum(dim=1)], dim=1)
    j = (budget_at >= eps_t[:, None]).float().argmax(dim=1).clamp_min(1)
    rows = torch.arange(n)
    slope = active[rows, j - 1].clamp_min(1)
    lam = points[rows, j - 1] - (eps_t - budget_at[rows, j - 1]) / slope
    lam = torch.where(over, lam.clamp_min(0.0), torch.zeros_like(lam))
    delta = torch.minimum((size - lam[:, None]).clamp_min(0.0), room)
    total = delta.sum(dim=1)
    delta = (
        delta * torch.where(total > eps_t, eps_t / total.clamp_min(1e-12), torch.ones_like(total))[:, None]
    )
    return (flat.sign() * delta).view(shape)


def kthvalue_step(grad: Tensor, k: int) -> Tensor:
    """The previous L1 step: the threshold by `kthvalue`."""
    flat = grad.flatten(1)
    size = flat.abs()
    threshold = size.kthvalue(size.shape[1] - k + 1, dim=1, keepdim=True).values
    mask = size >= threshold
    return (torch.where(mask, flat.sign(), torch.zeros_like(flat)) / mask.sum(dim=1, keepdim=True)).view_as(
        grad
    )


def _problems(dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        n, d = 3, int(torch.randint(5, 3000, (1,), generator=gen))
        x0 = torch.rand(n, d, generator=gen, dtype=dtype)
        if trial % 3 == 0:
            x0 = (x0 * 4).round() / 4  # quantised pixels: many equal rooms, pixels on the range's edges
        kind = trial % 4
        g = torch.randn(n, d, generator=gen, dtype=dtype)
        if kind == 0:
            v = 0.3 * g
        elif kind == 1:  # a PGD-L1 step: many coordinates moved by the same amount (tied breakpoints)
            v = 0.1 * d * sparse_step(g, max(1, d // 5))
        elif kind == 2:
            v = 0.1 * g.sign()
        else:
            v = g * torch.rand(n, 1, generator=gen, dtype=dtype)
        yield v, x0, float(torch.rand(1, generator=gen)) * d * 0.05


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_projection_is_the_previous_sorted_walk(dtype: torch.dtype) -> None:
    tol = 1e-12 if dtype == torch.float64 else 3e-6
    for v, x0, eps in _problems(dtype):
        torch.testing.assert_close(
            project_l1_box(v, x0, eps), sorted_walk_projection(v, x0, eps), atol=tol, rtol=0
        )


def test_the_projection_finishes_exactly_from_any_bracket(monkeypatch) -> None:
    # One secant round and a finish that sorts up to everything: the walk alone must land on the threshold.
    monkeypatch.setattr(norms, "SECANT_ROUNDS", 1)
    monkeypatch.setattr(norms, "FINISH_POINTS", 10**9)
    for v, x0, eps in _problems(torch.float64):
        torch.testing.assert_close(
            project_l1_box(v, x0, eps), sorted_walk_projection(v, x0, eps), atol=1e-12, rtol=0
        )


def test_the_l1_step_is_the_previous_kthvalue_step() -> None:
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(4, 3, 9, 9, generator=gen)
    g[:, :, :3] = g[:, :, :3].round()  # ties at the threshold share the unit budget, as before
    for k in (1, 7, 50, 243):
        assert torch.equal(sparse_step(g, k), kthvalue_step(g, k))
    per_sample = torch.tensor([3, 50, 50, 200])
    expected = torch.cat([kthvalue_step(g[i : i + 1], int(per_sample[i])) for i in range(4)])
    assert torch.equal(sparse_step(g, per_sample), expected)
