"""Multi-task attacks: method (FGSM, PGD, MIM, APGD; Square without gradients) x direction x attack loss.

Plain PyTorch, no Lightning or Hydra. Typical use::

    attack = PGD(eps=from_pixels(8), steps=10, direction="dgba")
    x_adv = attack(model, x, targets, tasks)          # tasks: dict[name, Task] or dict[name, task.loss]
    result = attack.run(model, x, targets, tasks, record=True)   # result.x_adv, result.history
"""

from mtl_robust.attacks.apgd import APGD, paper_checkpoints, reference_checkpoints
from mtl_robust.attacks.attack_losses import (
    CosPGDL1Loss,
    CosPGDLoss,
    SegPGDLoss,
    StepAwareLoss,
    build_attack_loss,
)
from mtl_robust.attacks.base import Attack, AttackResult, StepRecord, project
from mtl_robust.attacks.directions import (
    DGBA,
    DGBAReference,
    Direction,
    SignSum,
    Single,
    StaticRelative,
    Total,
    build_direction,
    dgba_reference_gradient,
    register_direction,
)
from mtl_robust.attacks.ensemble import Ensemble, EnsembleResult
from mtl_robust.attacks.fgsm import FGSM
from mtl_robust.attacks.mim import MIM
from mtl_robust.attacks.minmax import MinMax, solve_minmax, solve_minmax_lp
from mtl_robust.attacks.model_call import MultiTaskAdapter, forward_tasks
from mtl_robust.attacks.objective import Evaluation, MultiTaskObjective
from mtl_robust.attacks.pgd import PGD
from mtl_robust.attacks.registry import build_attack
from mtl_robust.attacks.square import Square
from mtl_robust.attacks.stealth import Stealth, solve_stealth, solve_stealth_lp
from mtl_robust.attacks.weighted_direction import Weighted

# 0-255 pixel units (the paper's eps = 8) -> the [0, 1] scale; the conversion lives with the budget value.
from mtl_robust.values.budget import from_pixels

__all__ = [
    "APGD",
    "DGBA",
    "FGSM",
    "MIM",
    "MinMax",
    "MultiTaskAdapter",
    "PGD",
    "Attack",
    "AttackResult",
    "CosPGDL1Loss",
    "CosPGDLoss",
    "DGBAReference",
    "Direction",
    "Ensemble",
    "EnsembleResult",
    "Evaluation",
    "MultiTaskObjective",
    "SegPGDLoss",
    "SignSum",
    "Single",
    "Square",
    "Stealth",
    "Weighted",
    "StaticRelative",
    "StepAwareLoss",
    "StepRecord",
    "Total",
    "build_attack",
    "build_attack_loss",
    "build_direction",
    "dgba_reference_gradient",
    "forward_tasks",
    "from_pixels",
    "paper_checkpoints",
    "project",
    "reference_checkpoints",
    "register_direction",
    "solve_minmax",
    "solve_minmax_lp",
    "solve_stealth",
    "solve_stealth_lp",
]
