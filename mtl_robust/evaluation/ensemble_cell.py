"""An ensemble as one evaluation cell: its row holds every selection rule, every member and the wins.

`EnsembleCellAttack` is the attack function the evaluation pass calls per batch. It runs the ensemble once,
returns the `joint` selection (so the row's main numbers are the ensemble's joint worst case) and, on the
side, updates the dataset-level metrics of every rule's selection and of every member's own x_adv, and
counts per rule which member won each image. `row_results` turns that into the row's extra fields:

    results["ensemble"] = {
      "rules": {rule: {"adv": ..., "rel": ..., "rel_task": {task: float}, "rel_avg": float}},
      "members": {member: {"rel_task": {task: float}, "rel_avg": float}},  # + "queries_per_image" (Square)
      "wins": {rule: {member: images won}},
      "primary": rule whose selection the row's top-level numbers are,
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtl_robust.attacks.config import ENSEMBLE_DIRECTION
from mtl_robust.attacks.ensemble import JOINT, Ensemble
from mtl_robust.attacks.model_call import forward_tasks
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.square import QueryTally
from mtl_robust.evaluation.passes import PassResult
from mtl_robust.evaluation.relative import compare
from mtl_robust.values.budget import parse_budget, to_pixels


class _Accumulator:
    """Dataset-level metrics and mean per-sample losses of one stream of adversarial batches."""

    def __init__(self, tasks: Mapping[str, Any]) -> None:
        self.tasks = tasks
        self.metrics = {t: task.metric() for t, task in tasks.items()}
        self.loss_sum = {t: 0.0 for t in tasks}
        self.loss_count = {t: 0 for t in tasks}
        self.samples = 0

    def update(self, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        for t, task in self.tasks.items():
            pred, target = preds[t].detach().cpu(), targets[t].cpu()
            self.metrics[t].update(pred, target)
            has_valid = task.valid_count(target) > 0
            self.loss_sum[t] += float(task.loss(pred, target)[has_valid].sum())
            self.loss_count[t] += int(has_valid.sum())
        self.samples += int(next(iter(targets.values())).shape[0])

    def result(self) -> PassResult:
        metrics = {t: {k: float(v) for k, v in m.compute().items()} for t, m in self.metrics.items()}
        losses = {
            t: self.loss_sum[t] / self.loss_count[t] if self.loss_count[t] else float("nan")
            for t in self.tasks
        }
        return PassResult(metrics=metrics, losses=losses, num_samples=self.samples)


def _summary(clean: PassResult, adv: PassResult, tasks: Mapping[str, Any]) -> dict[str, Any]:
    change = compare(clean.metrics, adv.metrics, {t: task.higher_is_better for t, task in tasks.items()})
    return {
        "adv": adv.metrics,
        "rel": change.per_metric,
        "rel_task": change.per_task,
        "rel_avg": change.average,
    }


class EnsembleCellAttack:
    """(model, x, targets) -> the joint (or first rule's) x_adv, recording everything else of the batch."""

    def __init__(self, ensemble: Ensemble, tasks: Mapping[str, Any]) -> None:
        ensemble.check_tasks(list(tasks))
        self.ensemble = ensemble
        self.tasks = tasks
        self.primary = JOINT if JOINT in ensemble.rules else ensemble.rules[0]
        self._reset()

    def _reset(self) -> None:
        self.rule_acc = {r: _Accumulator(self.tasks) for r in self.ensemble.rules}
        self.member_acc = {m: _Accumulator(self.tasks) for m in self.ensemble.names}
        self.wins = {r: dict.fromkeys(self.ensemble.names, 0) for r in self.ensemble.rules}
        self.queries: dict[str, QueryTally] = {}  # query-based members only

    def __call__(self, model: nn.Module, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        def on_member(name: str, x_adv: Tensor, preds: dict[str, Tensor]) -> None:
            self.member_acc[name].update(preds, targets)

        result = self.ensemble.run(model, x, targets, self.tasks, on_member=on_member)
        with eval_mode(model), torch.no_grad():
            for rule, x_rule in result.x_adv.items():
                self.rule_acc[rule].update(forward_tasks(model, x_rule), targets)
        for name, counts in result.queries.items():
            self.queries.setdefault(name, QueryTally()).add(counts)
        names = self.ensemble.names
        for rule, winners in result.winners.items():
            for index in winners.tolist():
                self.wins[rule][names[index]] += 1
        return result.x_adv[self.primary]

    def row_results(self, clean: PassResult) -> dict[str, Any]:
        """The row's `ensemble` field for the passes run since the last call (then starts afresh)."""
        out = {
            "primary": self.primary,
            "rules": {r: _summary(clean, acc.result(), self.tasks) for r, acc in self.rule_acc.items()},
            "members": {
                m: {
                    k: v for k, v in _summary(clean, acc.result(), self.tasks).items() if k.startswith("rel_")
                }
                for m, acc in self.member_acc.items()
            },
            "wins": self.wins,
        }
        for name, tally in self.queries.items():
            out["members"][name]["queries_per_image"] = tally.per_image
        self._reset()
        return {"ensemble": out}


def ensemble_cell_config(attack_cfg: Mapping[str, Any], ensemble: Ensemble) -> dict[str, Any]:
    """The row config of an ensemble cell: budget, rules and every member's config (all keyed)."""
    config = {k: v for k, v in dict(attack_cfg).items() if v is not None}
    config["eps"] = ensemble.eps if "eps" not in config else parse_budget(config["eps"], "eps")
    config["pixel_eps"] = to_pixels(config["eps"])
    config["direction"] = ENSEMBLE_DIRECTION
    config["rules"] = list(ensemble.rules)
    config["member_names"] = ensemble.names
    config.setdefault("attack_losses", {})
    return config


def ensemble_cell(attack_cfg: Mapping[str, Any], tasks: Mapping[str, Any]) -> Any:
    """A runner `Cell` evaluating the ensemble of `attack_cfg` on a model with `tasks`."""
    from mtl_robust.attacks.config import ensemble_from_config
    from mtl_robust.evaluation.runner import Cell

    ensemble = ensemble_from_config(attack_cfg, list(tasks))
    return Cell(config=ensemble_cell_config(attack_cfg, ensemble), attack=EnsembleCellAttack(ensemble, tasks))
