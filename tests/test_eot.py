"""EOT (`eot_samples`): on a model that is random at evaluation time the ascent direction is the mean over k
draws of each draw's own (direction-weighted) gradient, or of the per-task terms a direction with its own step
consumes; the judged objective is the mean of the k objectives; a default of 1 stays out of configs, rows and
keys; the planner counts k passes per step; bad values fail before any work."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mtl_robust.attacks.config import attack_from_config, attack_spec
from mtl_robust.attacks.directions import build_direction
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.objective import MultiTaskObjective
from mtl_robust.planning.cost import Work, cell_work
from tests.attack_stubs import TreeStub, make_batch, stub_tasks

torch.set_num_threads(1)
EPS = 8 / 255


class NoisyInput(nn.Module):
    """Gaussian noise on the input at evaluation time too (a randomised defense), then the network."""

    def __init__(self, inner: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma
        self.calls = 0

    def forward(self, x: Tensor, tasks=None) -> dict[str, Tensor]:
        self.calls += 1
        return self.inner(x + self.sigma * torch.randn_like(x), tasks=tasks)


def bound(direction: str, model: nn.Module, x, targets, tasks, k: int) -> MultiTaskObjective:
    built = build_direction(direction)
    objective = MultiTaskObjective(
        model, targets, tasks, built, built.tasks_needed(list(tasks)), eot_samples=k
    )
    with eval_mode(model):
        objective.init_state(x)
    return objective


@pytest.mark.parametrize("direction", ["dgba", "total", "sign_sum", "minmax"])
def test_the_eot_direction_averages_each_draws_weighted_terms(direction) -> None:
    model, tasks = NoisyInput(TreeStub(width=4)), stub_tasks()
    x, targets = make_batch(n=2, h=4, w=4, seed=1)
    objective = bound(direction, model, x, targets, tasks, k=3)
    single = bound(direction, model, x, targets, tasks, k=1)
    built = single.direction
    single.state = objective.state  # the clean losses' mean over the draws (MINMAX reads them)
    with eval_mode(model):
        torch.manual_seed(7)
        ev = objective(x, 0)
        torch.manual_seed(7)
        draws = []
        for _ in range(3):
            x_leaf = x.detach().requires_grad_(True)
            losses = single.step_losses(x_leaf, 0)
            term = built.expectation_terms(x_leaf, losses.ascent, single.valid, single.state)
            if term is None:
                term = single.ascent(x_leaf, losses.ascent)
            draws.append((term.detach(), built.objective(losses.judged, single.valid, single.state).detach()))
    mean_terms = sum(t for t, _ in draws) / 3
    expected = built.from_expectation(mean_terms, x, single.valid, single.state)
    torch.testing.assert_close(ev.grad, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ev.objective, sum(f for _, f in draws) / 3)
    if direction == "sign_sum":  # the vote of the mean gradients, not the mean of the votes
        assert set(ev.grad.unique().tolist()) <= {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
    # Three draws average out noise a single draw keeps: the EOT gradient differs from one draw's.
    torch.manual_seed(7)
    with eval_mode(model):
        assert not torch.allclose(single(x, 0).grad, ev.grad)


@pytest.mark.parametrize(("method", "calls"), [("fgsm", 1), ("pgd", 3), ("mim", 3), ("apgd", 4)])
def test_every_method_runs_k_passes_per_evaluation(method, calls) -> None:
    model, tasks = NoisyInput(TreeStub(width=4)), stub_tasks()
    x, targets = make_batch(n=2, h=4, w=4, seed=1)
    config = {"method": method, "eps": EPS, "eot_samples": 4}
    if method != "fgsm":
        config["steps"] = 3
    attack = attack_from_config(config, "dgba")
    torch.manual_seed(0)
    x_adv = attack(model, x, targets, tasks)
    assert model.calls == 4 * calls  # APGD: the start, two iterates, the last one (no gradient)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1


def test_the_default_stays_out_of_configs_and_rows() -> None:
    plain = attack_spec({"method": "pgd", "eps": EPS, "steps": 2}, "dgba")
    default = attack_spec({"method": "pgd", "eps": EPS, "steps": 2, "eot_samples": 1}, "dgba")
    four = attack_spec({"method": "pgd", "eps": EPS, "steps": 2, "eot_samples": 4}, "dgba")
    assert default.row_config() == plain.row_config()
    assert four.row_config()["eot_samples"] == 4
    assert "eot_samples=4" in repr(four.build()) and "eot_samples" not in repr(plain.build())


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_eot_samples_fail_before_any_work(value) -> None:
    with pytest.raises(ValueError, match="eot_samples must be an integer >= 1"):
        attack_from_config({"method": "apgd", "eps": EPS, "eot_samples": value}, "total")


def test_the_planner_counts_k_passes_per_step() -> None:
    tasks = ["seg", "normal", "depth"]
    pgd = {"method": "pgd", "steps": 10, "eps": EPS}
    assert cell_work(pgd, "dgba", tasks) == Work(forwards=10 + 1, backwards=10)  # + scoring x_adv
    assert cell_work({**pgd, "eot_samples": 4}, "dgba", tasks) == Work(forwards=40 + 1, backwards=40)
    member = {"method": "apgd", "steps": 10, "direction": "total", "eot_samples": 2}
    ensemble = {"method": "ensemble", "rules": ["joint"], "eps": EPS, "members": {"m": member}}
    # 20 gradients, the clean and the member's scores and the rule's evaluation forward
    assert cell_work(ensemble, "ensemble", tasks) == Work(forwards=20 + 3, backwards=20)


def test_a_random_models_cells_do_not_depend_on_their_order(tmp_path) -> None:
    """Each cell seeds the global generator from its key, so a noisy model's rows come out the same
    whichever cells ran before (a resumed sweep, another ordering)."""
    from mtl_robust.evaluation.passes import run_pass
    from mtl_robust.evaluation.runner import Cell, evaluate_cells
    from mtl_robust.evaluation.store import ResultsStore
    from mtl_robust.tasks import build_tasks
    from tests.attack_stubs import SEG_CLASSES

    model = NoisyInput(TreeStub(width=4))
    tasks = build_tasks(["seg", "normal", "depth"], num_classes=SEG_CLASSES)
    batch = make_batch(n=2, h=4, w=4, seed=1)
    clean = run_pass(model, tasks, [batch], progress=False)

    def cell(steps: int) -> Cell:
        config = {"method": "pgd", "eps": EPS, "steps": steps, "eot_samples": 2, "direction": "dgba"}
        attack = attack_from_config({k: v for k, v in config.items() if k != "direction"}, "dgba")
        return Cell(config=config, attack=attack.with_losses(tasks))

    def rows(order: list[int], store: str) -> dict[int, dict]:
        cells = [cell(steps) for steps in order]
        out = evaluate_cells(
            model,
            tasks,
            lambda: [batch],
            cells,
            ResultsStore(tmp_path / store),
            {"model_id": "m"},
            clean,
            torch.device("cpu"),
            progress=False,
        )
        return {steps: row["results"]["rel_avg"] for steps, row in zip(order, out)}

    assert rows([1, 2], "a.jsonl") == rows([2, 1], "b.jsonl")
