"""The multi-task method a model trains with: how its per-task losses become one update.

* `ew` (the default) and `static`: the weighted sum sum_t w_t L_t (`ew` with `train.loss_weights`, equal
  unless given; `static` with its own `mtl.weights`);
* loss weightings (torchjd scalarisers, one backward): `uw` (Kendall et al.'s uncertainty weighting, learned
  log-variances trained with the model) and `dwa` (Liu et al.'s dynamic weight average, from the epochs'
  mean losses);
* gradient aggregators (torchjd aggregators, one backward per task): `mgda`, `pcgrad`, `cagrad`,
  `nash_mtl`, `upgrad`, `imtl_g`.

Every method acts on the weighted losses w_t L_t (w_t = `train.loss_weights`, 1 by default), so a
weighting or aggregator on top of static weights means what it says.

What an aggregator aggregates follows the layout: each parameter is used by a set of tasks (the tasks whose
loss depends on it: read from the graph, not from the layout's spec, so any layout is covered). Parameters
used by the same set of tasks form a block; the aggregator combines, per block, the gradients of the tasks
that share it (an all-shared model: one block, the backbone, over all tasks; a tree: its stem over all
tasks, each branch over the tasks it serves), and a parameter used by one task (a head, an independent
model's backbone) gets that task's gradient. docs/mtl_methods.md gives the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

SUMS = ("ew", "static")
WEIGHTINGS = ("uw", "dwa")
AGGREGATORS = ("mgda", "pcgrad", "cagrad", "nash_mtl", "upgrad", "imtl_g")
METHODS = SUMS + WEIGHTINGS + AGGREGATORS

# torchjd's class for each aggregator; the `mtl` config's other keys are its arguments.
_AGGREGATOR_CLASSES = {
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "cagrad": "CAGrad",
    "nash_mtl": "NashMTL",
    "upgrad": "UPGrad",
    "imtl_g": "IMTLG",
}
_SCALARIZER_CLASSES = {"uw": "UW", "dwa": "DWA"}


def build_method(
    name: str, options: Mapping[str, Any], tasks: Sequence[str], loss_weights: Mapping[str, float]
) -> MultiTaskMethod:
    """The method `name` with its `mtl` config settings, for these tasks and loss weights."""
    if name not in METHODS:
        raise ValueError(f"unknown multi-task method mtl={name!r}; choose one of {METHODS}")
    return MultiTaskMethod(name, options, tasks, loss_weights)


class MultiTaskMethod(nn.Module):
    """Combines per-task batch-mean losses: `objective` (sums and weightings: one scalar to backward) or
    `aggregate_backward` (aggregators: fills the parameters' gradients). Only UW holds parameters (its
    log-variances, `scalarizer.log_var` in the module's state dict); `ew` adds nothing to a checkpoint."""

    def __init__(
        self, name: str, options: Mapping[str, Any], tasks: Sequence[str], loss_weights: Mapping[str, float]
    ) -> None:
        super().__init__()
        self.name = name
        self.tasks = list(tasks)
        self.options = dict(options)
        self.loss_weights = dict(loss_weights)
        self.scalarizer: nn.Module | None = None
        # One aggregator per block (a stateful one, Nash-MTL, keeps each block's state); not submodules.
        self._aggregators: dict[tuple[str, ...], Any] = {}
        self.last_weights: dict[str, dict[str, float]] = {}  # block ("seg+depth") -> task -> weight
        # Per block: the sum of its weights over every step and the step count (the mean over training,
        # what the `weighted` attack direction reads: one step's weights are noisy).
        self.weight_sums: dict[str, dict[str, float]] = {}
        self.weight_steps: dict[str, int] = {}
        if name in _SCALARIZER_CLASSES:
            import torchjd.scalarization as scalarization

            cls = getattr(scalarization, _SCALARIZER_CLASSES[name])
            self.scalarizer = cls(len(self.tasks)) if name == "uw" else cls(**self.options)
        elif name in AGGREGATORS:
            self._aggregator(tuple(self.tasks))  # a bad setting fails before training

    @property
    def is_aggregator(self) -> bool:
        return self.name in AGGREGATORS

    # ------------------------------------------------------------------------------ sums and weightings
    def objective(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The scalar a sum or weighting minimises: sum_t w_t L_t (ew, static) or the scalariser's."""
        if self.scalarizer is None:
            if self.is_aggregator:
                raise RuntimeError(f"mtl={self.name} aggregates gradients: call aggregate_backward")
            return sum(self.loss_weights[t] * loss for t, loss in losses.items())
        return self.scalarizer(torch.stack([self.loss_weights[t] * losses[t] for t in self.tasks]))

    def end_epoch(self) -> None:
        """DWA's weights move once per epoch."""
        if self.name == "dwa":
            self.scalarizer.step()

    # ------------------------------------------------------------------------------------ aggregators
    def _aggregator(self, users: tuple[str, ...]) -> Any:
        if users not in self._aggregators:
            import torchjd.aggregation as aggregation

            cls = getattr(aggregation, _AGGREGATOR_CLASSES[self.name])
            extra = {"n_tasks": len(users)} if self.name == "nash_mtl" else {}
            try:
                self._aggregators[users] = cls(**extra, **self.options)
            except (ImportError, TypeError, ValueError) as err:
                raise ValueError(
                    f"mtl={self.name}: torchjd's {cls.__name__} refuses {self.options}: {err}"
                ) from err
        return self._aggregators[users]

    def aggregate_backward(
        self, losses: Mapping[str, Tensor], params: Sequence[Tensor], penalty: Tensor | None = None
    ) -> None:
        """One backward per task, then per block of parameters shared by the same tasks, the aggregator's
        combination of their gradients; a parameter of one task gets its gradient. `penalty` (GradAlign)
        is not a task: its gradient is added to the result. Gradients accumulate into `.grad`."""
        params = [p for p in params if p.requires_grad]
        weighted = [self.loss_weights[t] * losses[t] for t in self.tasks]
        grads = [torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) for loss in weighted]
        blocks: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(params)):
            users = tuple(k for k in range(len(self.tasks)) if grads[k][i] is not None)
            if users:
                blocks.setdefault(users, []).append(i)
        for users, indices in blocks.items():
            if len(users) == 1:
                combined = [grads[users[0]][i] for i in indices]
            else:
                jacobian = torch.stack([torch.cat([grads[k][i].reshape(-1) for i in indices]) for k in users])
                names = tuple(self.tasks[k] for k in users)
                weights = self._aggregator(names).weighting(jacobian)
                block = "+".join(names)
                self.last_weights[block] = {
                    t: float(w) * self.loss_weights[t] for t, w in zip(names, weights, strict=True)
                }
                sums = self.weight_sums.setdefault(block, dict.fromkeys(names, 0.0))
                for t, w in self.last_weights[block].items():
                    sums[t] += w
                self.weight_steps[block] = self.weight_steps.get(block, 0) + 1
                flat = weights.to(jacobian.dtype) @ jacobian
                combined = list(torch.split(flat, [params[i].numel() for i in indices]))
            for i, grad in zip(indices, combined, strict=True):
                grad = grad.reshape(params[i].shape)
                params[i].grad = grad.clone() if params[i].grad is None else params[i].grad + grad
        if penalty is not None:
            penalty.backward()

    # ------------------------------------------------------------------------------------- checkpoint
    def weights(self) -> dict[str, Any]:
        """The task weights now: the static ones, UW's 0.5 exp(-s_t) w_t, DWA's lambda_t w_t, or an
        aggregator's last weights per block (its own weights of the w_t L_t gradients, times w_t)."""
        if self.name == "uw":
            log_var = self.scalarizer.log_var.detach()
            return {t: 0.5 * math.exp(-float(s)) * self.loss_weights[t] for t, s in zip(self.tasks, log_var)}
        if self.name == "dwa":
            rates = self.scalarizer._compute_weights(torch.ones(len(self.tasks)))  # noqa: SLF001 (torchjd 0.18)
            return {t: float(r) * self.loss_weights[t] for t, r in zip(self.tasks, rates, strict=True)}
        if self.is_aggregator:
            return {block: dict(w) for block, w in self.last_weights.items()}
        return dict(self.loss_weights)

    def mean_weights(self) -> dict[str, dict[str, float]]:
        """An aggregator's weights per block averaged over every training step it aggregated."""
        return {
            block: {t: w / self.weight_steps[block] for t, w in sums.items()}
            for block, sums in self.weight_sums.items()
        }

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps besides the state dict: the method, its final weights (an aggregator's
        mean weights and step counts too), DWA's history."""
        state: dict[str, Any] = {"name": self.name, "weights": self.weights()}
        if self.is_aggregator:
            state["weight_sums"] = {block: dict(sums) for block, sums in self.weight_sums.items()}
            state["weight_steps"] = dict(self.weight_steps)
        if self.name == "dwa":
            state["dwa_history"] = [a.tolist() for a in self.scalarizer._previous_averages]  # noqa: SLF001
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        if self.name == "dwa" and state.get("dwa_history"):
            self.scalarizer._previous_averages = [torch.tensor(a) for a in state["dwa_history"]]  # noqa: SLF001
        if self.is_aggregator:
            self.last_weights = {k: dict(v) for k, v in (state.get("weights") or {}).items()}
            self.weight_sums = {k: dict(v) for k, v in (state.get("weight_sums") or {}).items()}
            self.weight_steps = {k: int(v) for k, v in (state.get("weight_steps") or {}).items()}
