"""Per-image worst case over an ensemble of attacks (AutoAttack's evaluation, for multi-task models).

Every member (any configured method x direction x per-task attack loss) attacks the same batch; per image,
each selection rule keeps the member's x_adv that is worst for it:

* ``joint``: the lowest per-image joint change (`scores.joint_change`), one image that hurts all tasks;
* ``task:<t>``: the lowest per-image change of task t alone (the per-task worst case).

Memory: the best x_adv per rule plus the member currently evaluated, never all members' outputs. The
result also says, per rule, which member won each image. Plain PyTorch; `tasks` must be Task objects
(their per-image metrics score the candidates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mtl_robust.attacks.base import Attack, per_sample
from mtl_robust.attacks.directions import Single
from mtl_robust.attacks.model_call import forward_tasks
from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.scores import joint_change, per_image_change, per_image_metrics

JOINT = "joint"
MemberHook = Callable[[str, Tensor, dict[str, Tensor]], None]  # (member name, x_adv, preds on x_adv)


def parse_rule(rule: str) -> str | None:
    """ "joint" -> None; "task:<t>" -> t; anything else is an error."""
    if rule == JOINT:
        return None
    kind, _, task = str(rule).partition(":")
    if kind == "task" and task:
        return task
    raise ValueError(f"unknown ensemble selection rule {rule!r}; use 'joint' or 'task:<task>'")


@dataclass(frozen=True)
class EnsembleResult:
    x_adv: dict[str, Tensor]  # rule -> selected adversarial batch
    winners: dict[str, Tensor]  # rule -> [N] index of the winning member per image (CPU, int64)
    scores: dict[str, Tensor]  # rule -> [N] the winner's per-image change (negative = worse)
    queries: dict[str, Tensor] = field(default_factory=dict)  # query-based member -> [N] queries per image


class Ensemble:
    """`Ensemble({name: attack, ...}, rules=["joint", "task:seg", ...])`; `run(model, x, targets, tasks)`.

    All members must share one eps (the ensemble's budget). Bad input fails here or in `check_tasks`,
    before any model work: no member, a non-Attack member, unknown rules, mixed budgets.
    """

    def __init__(self, members: Mapping[str, Attack], rules: Sequence[str] = (JOINT,)) -> None:
        if not isinstance(members, Mapping) or not members:
            raise ValueError("an attack ensemble needs at least one member")
        for name, attack in members.items():
            if not isinstance(attack, Attack):
                raise TypeError(f"ensemble member {name!r} must be an Attack, got {type(attack).__name__}")
        budgets = {round(a.eps, 12) for a in members.values()}
        if len(budgets) != 1:
            raise ValueError(f"ensemble members must share one eps, got {sorted(budgets)}")
        rules = list(rules)
        if not rules:
            raise ValueError("an attack ensemble needs at least one selection rule ('joint', 'task:<t>')")
        for rule in rules:
            parse_rule(rule)
        if len(set(rules)) != len(rules):
            raise ValueError(f"duplicate selection rules: {rules}")
        self.members = dict(members)
        self.rules = rules
        self.eps = next(iter(self.members.values())).eps

    @property
    def forwards_per_image(self) -> int:
        """Forwards of one run besides its members' own: the clean scores and each member's x_adv scored."""
        return 1 + len(self.members)

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def check_tasks(self, tasks: Sequence[str]) -> None:
        """Every rule's task and every SINGLE member's task exists; before any attack runs."""
        tasks = list(tasks)
        for rule in self.rules:
            task = parse_rule(rule)
            if task is not None and task not in tasks:
                raise ValueError(
                    f"ensemble selection rule {rule!r}: unknown task {task!r}; tasks are {tasks}"
                )
        for name, attack in self.members.items():
            direction = attack.direction
            if isinstance(direction, Single) and direction.task not in tasks:
                raise ValueError(
                    f"ensemble member {name!r} attacks unknown task {direction.task!r}; tasks are {tasks}"
                )
            unknown = sorted(set(attack.attack_losses) - set(tasks))
            if unknown:
                raise ValueError(f"ensemble member {name!r} sets attack losses of unknown tasks {unknown}")

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        targets: Mapping[str, Tensor],
        tasks: Mapping[str, object],
        *,
        on_member: MemberHook | None = None,
    ) -> EnsembleResult:
        """Run every member on (x, targets) and keep, per rule and image, the worst member's x_adv."""
        self.check_tasks(list(tasks))
        higher = {t: dict(task.higher_is_better) for t, task in tasks.items()}
        x = x.detach()
        with eval_mode(model), torch.no_grad():
            clean = per_image_metrics(tasks, forward_tasks(model, x.clamp(0, 1)), targets)
        best_x: dict[str, Tensor] = {}
        best_score: dict[str, Tensor] = {}
        winners: dict[str, Tensor] = {}
        queries: dict[str, Tensor] = {}
        for index, (name, attack) in enumerate(self.members.items()):
            crafted = attack.run(model, x, targets, tasks)
            x_adv = crafted.x_adv
            if crafted.queries is not None:
                queries[name] = crafted.queries
            with eval_mode(model), torch.no_grad():
                preds = forward_tasks(model, x_adv)
            if on_member is not None:
                on_member(name, x_adv, preds)
            change = per_image_change(clean, per_image_metrics(tasks, preds, targets), higher)
            joint = joint_change(change)
            for rule in self.rules:
                task = parse_rule(rule)
                score = joint if task is None else change[task]
                score = torch.where(torch.isnan(score), torch.inf, score)  # undefined never wins
                if rule not in best_x:
                    best_x[rule], best_score[rule] = x_adv.clone(), score
                    winners[rule] = torch.zeros(x.shape[0], dtype=torch.int64)
                    continue
                better = score < best_score[rule]
                best_x[rule] = torch.where(per_sample(better.to(x_adv.device), x_adv), x_adv, best_x[rule])
                best_score[rule] = torch.where(better, score, best_score[rule])
                winners[rule] = torch.where(better, torch.full_like(winners[rule], index), winners[rule])
            del crafted, x_adv, preds
        scores = {r: torch.where(torch.isinf(v), torch.nan, v) for r, v in best_score.items()}
        return EnsembleResult(best_x, winners, scores, queries)

    def __repr__(self) -> str:
        return f"Ensemble(eps={self.eps:.6g}, rules={self.rules}, members={list(self.members)})"
