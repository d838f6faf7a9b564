"""Threat models beyond L-inf: the norm value, its geometry checked against CVXPY, MINMAX-L2 against the SOCP,
configs (L-inf out of keys), refusals, ensembles and defenses under a norm."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from mtl_robust.attacks.apgd import APGD
from mtl_robust.attacks.config import attack_spec, ensemble_from_config
from mtl_robust.attacks.lp import crosscheck_minmax_step, crosscheck_norm
from mtl_robust.attacks.minmax_l2 import project_simplex, solve_minmax_l2_batch, solve_minmax_l2_socp
from mtl_robust.attacks.norms import norms_of, project, random_start, sparse_step, steepest, step_count
from mtl_robust.attacks.pgd import PGD
from mtl_robust.lightning.fast_at import parse_fast_at
from mtl_robust.lightning.module import defense_name
from mtl_robust.values.norm import L1, L2, LINF, Norm, NormRefusal
from tests.attack_stubs import TreeStub, make_batch, stub_tasks

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------ value
def test_the_norm_value_parses_formats_and_keeps_linf_out_of_keys() -> None:
    assert Norm.parse(None) == LINF and Norm.parse("Linf") == LINF and Norm.parse("inf") == LINF
    assert str(Norm.parse("L2")) == "l2" and Norm.parse("l1:0.2") == L1  # the default share is left out
    assert str(Norm.parse("l1:0.05")) == "l1:0.05" and Norm.parse("l1:0.05").step_share == 0.05
    assert (LINF.key, L2.key, Norm.parse("l1:0.05").key) == (None, "l2", "l1:0.05")
    for bad in ("l3", "l2:0.5", "l1:0", "l1:x", 2):
        with pytest.raises(ValueError, match="norm|share"):
            Norm.parse(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LINF.check_radius(2.0)
    assert L2.check_radius(3.0) == 3.0 and L1.check_radius(12.0) == 12.0


def test_attack_configs_keep_linf_out_of_their_config_and_put_l2_in() -> None:
    plain = attack_spec({"method": "pgd", "eps": "8/255", "norm": None}, "total").config
    explicit = attack_spec({"method": "pgd", "eps": "8/255", "norm": "linf"}, "total").config
    assert "norm" not in plain and dict(plain) == dict(explicit)
    l2 = attack_spec({"method": "pgd", "eps": 2.0, "norm": "L2"}, "dgba")
    assert l2.config["norm"] == "l2" and l2.config["eps"] == 2.0  # an L2 radius may exceed 1
    assert l2.build().norm == L2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack_spec({"method": "pgd", "eps": 2.0}, "total")
    with pytest.raises(ValueError, match="norm"):
        attack_spec({"method": "pgd", "eps": 0.5, "norm": "l7"}, "total")


# ------------------------------------------------------------------------------------------ geometry
def _cvxpy_l1_box_projection(v: np.ndarray, x0: np.ndarray, eps: float) -> np.ndarray:
    d = cp.Variable(v.size)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(d - v)), [cp.norm(d, 1) <= eps, x0 + d >= 0, x0 + d <= 1])
    problem.solve(solver="CLARABEL")
    return np.asarray(d.value)


def test_the_l1_projection_is_the_exact_projection_onto_ball_and_box() -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 40, generator=gen, dtype=torch.float64)
    x0[:, :10] = x0[:, :10].round()  # pixels on the range's edges: half their directions have no room
    v = (
        torch.randn(6, 40, generator=gen, dtype=torch.float64)
        * torch.tensor([0.05, 0.3, 1, 3, 0.5, 2.0])[:, None]
    )
    for eps in (0.5, 2.0):
        delta = project(x0 + v, x0, eps, L1) - x0
        assert (norms_of(delta, L1) <= eps + 1e-9).all()
        assert ((x0 + delta) >= 0).all() and ((x0 + delta) <= 1).all()
        for n in range(6):
            reference = _cvxpy_l1_box_projection(v[n].numpy(), x0[n].numpy(), eps)
            np.testing.assert_allclose(delta[n].numpy(), reference, atol=1e-5)
        # A projection is idempotent.
        torch.testing.assert_close(project(x0 + delta, x0, eps, L1), x0 + delta, atol=1e-12, rtol=0)


def test_l2_projection_and_random_starts_stay_in_ball_and_range() -> None:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 5, 5, generator=gen)
    for norm, eps in ((L2, 0.7), (L1, 3.0), (LINF, 0.1)):
        for x in (x0 + torch.randn(x0.shape, generator=gen), random_start(x0, eps, norm, gen)):
            y = project(x, x0, eps, norm)
            assert (norms_of(y - x0, norm) <= eps * (1 + 1e-5)).all(), norm
            assert y.min() >= 0 and y.max() <= 1


def test_steepest_steps_are_the_exact_maximisers_of_the_linearisation() -> None:
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    l2 = steepest(g, L2)
    torch.testing.assert_close((g * l2).sum(1), g.norm(dim=1))
    torch.testing.assert_close(norms_of(l2, L2), torch.ones(3, dtype=torch.float64))
    norm = Norm("l1", 0.1)
    k = step_count(norm, 50)
    assert k == 5
    l1 = steepest(g, norm)
    assert ((l1 != 0).sum(1) == k).all()
    torch.testing.assert_close(sparse_step(g, torch.full((3,), k)), l1)
    for n in range(3):  # the LP: max g . d over ||d||_1 <= 1, ||d||_inf <= 1/k
        d = cp.Variable(50)
        problem = cp.Problem(cp.Maximize(g[n].numpy() @ d), [cp.norm(d, 1) <= 1, cp.abs(d) <= 1 / k])
        problem.solve(solver="HIGHS")
        assert abs(problem.value - float(g[n] @ l1[n])) < 1e-9


# ------------------------------------------------------------------------------------------ MINMAX-L2
def test_minmax_l2_matches_the_socp_reference() -> None:
    gen = np.random.default_rng(3)
    problems = []
    for t in (2, 3, 4):
        for scale in (1.0, 1e-4):
            a = gen.normal(size=(t, 30)) * scale
            a[0] += 2 * scale  # a shared component: 0 lies outside the hull
            problems.append(a)
    problems.append(np.stack([np.ones(30), -np.ones(30)]))  # opposite tasks: value 0, no step
    largest = 0.0
    for a in problems:
        padded = np.zeros((4, 30))
        padded[: a.shape[0]] = a
        valid = torch.tensor([[i < a.shape[0] for i in range(4)]])
        sol = solve_minmax_l2_batch(torch.from_numpy(padded)[None], valid)
        _, reference = solve_minmax_l2_socp(a)
        ours = float(sol.value[0])
        assert float(sol.gap[0]) < 1e-9
        assert float(sol.delta[0].norm()) <= 1 + 1e-12
        largest = max(largest, abs(ours - reference) / max(abs(reference), np.abs(a).max() * 1e-6))
        assert ours >= reference - 1e-6 * max(abs(reference), np.abs(a).max())
    assert largest < 1e-5


def test_the_simplex_projection_keeps_invalid_tasks_at_zero() -> None:
    v = torch.tensor([[0.3, 2.0, -1.0], [0.2, 0.2, 0.2]], dtype=torch.float64)
    valid = torch.tensor([[True, False, True], [True, True, True]])
    out = project_simplex(v, valid)
    torch.testing.assert_close(out.sum(1), torch.ones(2, dtype=torch.float64))
    assert out[0, 1] == 0 and (out >= 0).all()
    torch.testing.assert_close(out[1], torch.full((3,), 1 / 3, dtype=torch.float64))


# ------------------------------------------------------------------------------------ methods, refusals
@pytest.mark.parametrize(("norm", "eps"), [("l2", 0.5), ("l1", 2.0)])
@pytest.mark.parametrize("method", ["pgd_rs", "apgd"])
def test_multi_step_attacks_keep_ball_and_range_and_raise_the_objective(norm, eps, method) -> None:
    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = make_batch(n=2, h=4, w=4, seed=1)
    if method == "apgd":
        attack = APGD(eps, steps=8, norm=norm, direction="dgba", seed=0)
    else:
        attack = PGD(eps, steps=5, alpha=eps / 2, random_start=True, norm=norm, direction="dgba", seed=0)
    x_adv = attack(model, x, targets, tasks)
    assert (norms_of(x_adv - x, Norm.parse(norm)) <= eps * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (attack.score(model, x, targets, tasks, x_adv) > attack.score(model, x, targets, tasks, x)).all()


def test_combinations_a_norm_cannot_do_are_refused_with_one_clear_error() -> None:
    cases = {
        ("square", "total", "l1"): "linf/l2 only",
        ("pgd", "sign_sum", "l2"): "vote of gradient signs",
        ("apgd_paper", "total", "l1"): "no L1 form",
    }
    for (method, direction, norm), words in cases.items():
        with pytest.raises(NormRefusal, match=words):
            attack_spec({"method": method, "eps": 0.5, "norm": norm}, direction).build()
    with pytest.raises(NormRefusal, match="L-inf only"):
        parse_fast_at({"name": "fgsm_rs", "norm": "l2"})
    parse_fast_at({"name": "fgsm_rs", "norm": "linf"})  # the default is accepted


def test_an_ensemble_under_a_norm_leaves_out_the_members_without_an_attack_there() -> None:
    members = {
        "pgd-dgba": {"method": "pgd", "steps": 2, "direction": "dgba"},
        "pgd-minmax": {"method": "pgd", "steps": 2, "direction": "minmax"},
        "square": {"method": "square", "queries": 2, "direction": "dgba"},
    }
    l2 = ensemble_from_config({"method": "ensemble", "eps": 0.5, "norm": "l2", "members": members})
    assert l2.names == list(members)  # Square-L2 too
    assert all(m.norm == L2 for m in l2.members.values())
    l1 = ensemble_from_config({"method": "ensemble", "eps": 2.0, "norm": "l1", "members": members})
    assert l1.names == ["pgd-dgba", "pgd-minmax"]  # no Square-L1; MINMAX-L1 solves its game
    linf = ensemble_from_config({"method": "ensemble", "eps": 0.03, "members": members})
    assert linf.names == list(members)


def test_pgd_at_under_l2_is_named_by_its_norm() -> None:
    defense = {"name": "adv_train", "attack": {"method": "pgd", "norm": "l2"}, "direction": "total"}
    assert defense_name(defense) == "adv_train:pgd[l2]-total"
    defense["attack"]["norm"] = None
    assert defense_name(defense) == "adv_train:pgd-total"


def test_the_cross_checks_find_every_closed_form_at_its_program_optimum() -> None:
    gen = torch.Generator().manual_seed(4)
    c = torch.randn(2, 3, 6, 6, generator=gen)
    for norm in (L2, L1, Norm("l1", 0.05)):
        result = crosscheck_norm(c, 0.5, norm, max_coords=60, generator=gen)
        assert result.gap < 1e-6 and result.n_coords == 60 and result.subsampled
    problems = [np.random.default_rng(n).normal(size=(3, 80)) + 1.0 for n in range(2)]
    for norm in (L2, L1, Norm("l1", 0.05)):
        assert crosscheck_minmax_step(problems, 0.5, norm=norm).gap < 1e-6


def test_the_co_watch_attacks_under_the_defense_norm() -> None:
    from mtl_robust.lightning.co_watch import watched_attack_settings, watched_norm

    l2 = {"name": "adv_train", "attack": {"method": "pgd", "eps": 0.5, "norm": "l2"}, "direction": "dgba"}
    assert watched_norm(l2) == L2 and watched_attack_settings(l2) == (0.5, "dgba")
    assert watched_norm(None) == LINF and watched_norm({"name": "fgsm_rs"}) == LINF
    assert watched_norm({"name": "adv_train", "attack": {"method": "pgd"}}) == LINF


def test_report_records_group_by_norm_and_read_old_rows_as_linf() -> None:
    from pathlib import Path

    from mtl_robust.report.records import Record

    def record(config: dict) -> Record:
        return Record("s", "k", "ok", 0.0, {"method": "pgd", "eps": 0.5, **config}, {}, "", Path("."))

    old, l2 = record({}), record({"norm": "l2"})
    assert (old.norm, old.method, old.method_name) == ("linf", "pgd", "pgd")
    assert (l2.norm, l2.method, l2.method_name) == ("l2", "pgd[l2]", "pgd")


def test_the_threat_model_study_runs_each_norm_at_its_own_radius_on_the_cached_layouts(compose, monkeypatch):
    import mtl_robust.jobs.pipeline as pipeline

    cfg = compose(["experiment=study_threat_models_smoke", "sharing=all_shared"], config_name="pipeline")
    cells = pipeline.attack_list(cfg, ["seg", "normal", "depth"])
    by_norm = {(c.get("norm"), c["eps"]) for c, _ in cells}
    assert by_norm == {(None, "8/255"), ("l2", 0.75)}
    assert len(cells) == 2 * (3 + 3)  # two norms x (SINGLE per task, TOTAL, DGBA, MINMAX)
    assert all(attack_spec(c, d).build() for c, d in cells)  # every cell is a valid attack
    # Its models are the seeds study's seed-0 models: one training serves both (the checkpoint cache).
    monkeypatch.setattr(pipeline, "runtime_info", lambda cfg: {"torch": "pinned"})
    seeds = compose(["experiment=study_seeds_smoke", "sharing=all_shared", "seed=0"], config_name="pipeline")
    assert pipeline.training_key(cfg) == pipeline.training_key(seeds)


def test_diagnostics_probe_under_the_requested_norm() -> None:
    from mtl_robust.evaluation.diagnostics import diagnose
    from mtl_robust.tasks import build_tasks
    from tests.attack_stubs import SEG_CLASSES

    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)
    batch = make_batch(n=2, h=4, w=4, seed=1)
    report = diagnose(TreeStub(), tasks, lambda: [batch], eps=0.5, steps=2, norm="l2")
    assert set(report.measures) == {"pgd", "pgd_2eps", "apgd", "apgd_4x_steps", "apgd_eps1", "noise"}
    assert all(np.isfinite(v) for v in report.measures.values())
    # Any image is reachable at the all-ones radius, so the attack there hurts at least as much as at eps.
    assert report.measures["apgd_eps1"] <= report.measures["apgd"] + 1e-6


def test_square_l2_searches_on_the_sphere_and_raises_the_objective() -> None:
    from mtl_robust.attacks.square import Square

    model, tasks = TreeStub(width=4), stub_tasks()
    x, targets = make_batch(n=2, h=10, w=10, seed=2)
    attack = Square(0.5, queries=30, norm="l2", direction="dgba", seed=0)
    result = attack.run(model, x, targets, tasks, record=True)
    assert (norms_of(result.x_adv - x, L2) <= 0.5 * (1 + 1e-5)).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert (result.history[-1].objective > result.history[0].objective).any()
    assert (result.history[-1].objective >= result.history[0].objective).all()
    torch.testing.assert_close(attack.run(model, x, targets, tasks).x_adv, result.x_adv)  # seeded
