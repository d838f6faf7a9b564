"""The task weights a trained model was trained with, as the `weighted` attack direction reads them.

* `ew`, `static`: the static weights (`train.loss_weights`, 1 unless given; `mtl.weights`);
* `uw`, `dwa`: the final learned / dynamic weights (UW's 0.5 exp(-s_t) w_t from its log-variances in the
  state dict, DWA's lambda_t w_t from the loss history in `checkpoint["mtl"]`), as stored at the end of
  training;
* aggregators (MGDA, PCGrad, ...): the weights the aggregator gave the task gradients, averaged over every
  training step, in the block of parameters every task shares (the stem the input gradient passes first;
  the whole backbone of an all-shared model); one step's weights are noisy (MGDA's last step may give a task
  0). A checkpoint from before the means were kept gives its last step's. A model where no block is shared
  by every task (independent models), or a checkpoint without recorded weights, is refused: there is no
  one weighted objective to attack.
"""

from __future__ import annotations

from typing import Any

from mtl_robust.mtl.methods import AGGREGATORS


class NoTrainingWeights(ValueError):
    """The evaluated model has no training weights the `weighted` direction could attack with."""


def training_weights(module: Any) -> tuple[dict[str, float], str]:
    """(task -> weight, where they came from) for a trained `MultiTaskModule`."""
    procedure = getattr(module, "procedure", None)
    method = getattr(module, "mtl_method", None)
    if procedure is None or method is None:
        raise NoTrainingWeights(
            "direction weighted attacks a model on its training objective sum_t w_t L_t, but this model "
            f"({type(module).__name__}) was not trained here and has no training weights; use "
            "direction=total"
        )
    tasks = list(module.tasks)
    if procedure.mtl not in AGGREGATORS:
        weights = method.weights()
        source = {"uw": "final", "dwa": "final"}.get(procedure.mtl, "static")
        return {t: float(weights[t]) for t in tasks}, source
    block = "+".join(tasks)
    mean = method.mean_weights().get(block)
    if mean is not None:
        return {t: float(mean[t]) for t in tasks}, "mean_over_training"
    last = method.last_weights.get(block)  # a checkpoint written before the means were kept
    if last is None:
        known = sorted(method.last_weights)
        raise NoTrainingWeights(
            f"direction weighted: mtl={procedure.mtl} aggregates per block of shared parameters and this "
            f"checkpoint records no weights for a block shared by every task ({block}); blocks recorded: "
            f"{known or 'none'}; use direction=total"
        )
    return {t: float(last[t]) for t in tasks}, "last_step"
