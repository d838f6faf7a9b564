"""Evaluate one model under a list of attack cells: the clean pass once, then each attack, rows to the store.

A cell is an attack with its JSON config; its row key hashes that config together with the model's
identity (checkpoint hash, data, split), so a re-run skips finished cells and retries failed ones.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl_robust.attacks.model_mode import eval_mode
from mtl_robust.attacks.precision import DEFAULT_PRECISION
from mtl_robust.evaluation.claims import claim, try_claim
from mtl_robust.evaluation.passes import AttackFn, Batch, PassResult, run_pass
from mtl_robust.evaluation.per_image import FORMAT_VERSION, save_stats
from mtl_robust.evaluation.progress import CellProgress
from mtl_robust.evaluation.relative import compare, near_zero_floors
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.files import atomic_path
from mtl_robust.tasks import Task
from mtl_robust.values.budget import format_pixels
from mtl_robust.values.norm import method_label

log = logging.getLogger(__name__)

# Fields that say where things are, not what was computed: they stay out of the row key. `training` (the
# model's training cost, with wall-clock times) and `recipe`/`recipe_id` (how it was trained) describe a
# model that `model_id` already identifies.
UNKEYED_FIELDS = ("checkpoint", "study", "training", "recipe", "recipe_id")


@dataclass
class Cell:
    config: dict[str, Any]  # normalised attack config: method, eps, direction, steps, ...
    attack: AttackFn  # (model, x, targets) -> x_adv


def precision_key(model_info: Mapping[str, Any]) -> dict[str, str]:
    """The precision as a key field: none at the default float32, so rows and caches written before the
    option existed keep their keys (stores resume); {"precision": "bf16"} etc. otherwise."""
    precision = model_info.get("precision", DEFAULT_PRECISION)
    return {} if precision == DEFAULT_PRECISION else {"precision": precision}


def row_key(model_info: Mapping[str, Any], cell_config: Mapping[str, Any]) -> str:
    keyed = {
        k: v for k, v in {**model_info, **cell_config}.items() if k not in UNKEYED_FIELDS and k != "precision"
    }
    return config_key({**keyed, **precision_key(model_info)})


def summarize(
    clean: PassResult,
    adv: PassResult,
    tasks: Mapping[str, Task],
    seconds: float,
    trivial_baseline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results part of a row (see the store's schema): metrics, losses and relative changes (a metric
    whose clean value is near zero next to the trivial predictor's is left out, and listed)."""
    directions = {t: task.higher_is_better for t, task in tasks.items()}
    floors = near_zero_floors(trivial_baseline)
    change = compare(clean.metrics, adv.metrics, directions, clean.losses, adv.losses, floors)
    return {
        "clean": clean.metrics,
        "adv": adv.metrics,
        "clean_loss": clean.losses,
        "adv_loss": adv.losses,
        "higher_is_better": directions,
        "rel": change.per_metric,
        "rel_task": change.per_task,
        "rel_avg": change.average,
        "rel_loss": change.loss_per_task,
        "rel_loss_avg": change.loss_average,
        "rel_task_capped": change.per_task_capped,
        "rel_avg_capped": change.average_capped,
        "rel_excluded": change.excluded,
        "rel_nonfinite": change.nonfinite,
        "num_samples": adv.num_samples,
        "seconds": seconds,
    }


def save_example(
    path: Path, model: nn.Module, adv: PassResult, count: int, device: torch.device
) -> str | None:
    """A few images of the first batch, clean and adversarial, with both predictions (report grids)."""
    if adv.example is None or count <= 0:
        return None
    # Cloned: torch.save writes a slice's whole storage, i.e. the whole batch's, not just `count` images.
    x = adv.example["x"][:count].clone()
    x_adv = adv.example["x_eval"][:count].clone()
    with eval_mode(model), torch.no_grad():
        preds_clean = {t: p.cpu().clone() for t, p in model(x.to(device)).items()}
    payload = {
        "x": x,
        "x_adv": x_adv,
        "preds_clean": preds_clean,
        "preds_adv": {t: p[:count].clone() for t, p in adv.example["preds"].items()},
        "targets": {t: v[:count].clone() for t, v in adv.example["targets"].items()},
    }
    with atomic_path(path) as tmp:  # a killed job leaves no half-written example for the report
        torch.save(payload, tmp)
    return str(path)


def evaluate_cells(
    model: nn.Module,
    tasks: Mapping[str, Task],
    batches: Callable[[], Iterable[Batch]],
    cells: Iterable[Cell],
    store: ResultsStore,
    model_info: Mapping[str, Any],
    clean: PassResult,
    device: torch.device,
    progress: bool = True,
    example_dir: Path | None = None,
    example_count: int = 4,
    continue_on_error: bool = True,
    clean_per_image: Path | None = None,
    row_extras: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell not already done; return the latest row of every cell (computed or reused).

    `row_extras` are added to the results of every row computed (e.g. the model's diagnostics).
    Each cell is claimed before it is computed (see claims.py), so concurrent jobs on one store never
    compute the same cell: a cell another process holds is put back in the queue, and waited for once
    nothing else is left; its row is then read from the store (or the cell computed, if that process failed).

    With `clean_per_image` (the clean pass's per-image statistics file, in a `per_image/` folder next to
    the store), each cell also writes its adversarial per-image statistics there and its row references
    both files, relative to the store's folder.
    """
    cells = list(cells)
    rows: dict[int, dict[str, Any]] = {}
    finished = store.latest()
    queue = deque(range(len(cells)))
    deferred: set[int] = set()
    progress_line = CellProgress(len(cells))
    while queue:
        index = queue.popleft()
        cell = cells[index]
        key = row_key(model_info, cell.config)
        config = {**model_info, **cell.config}
        previous = finished.get(key)
        held = None
        if previous is None or previous.get("status") != "ok":
            claim_path = store.path.parent / "claims" / f"{key}.claim"
            if index in deferred:
                held = claim(claim_path, what=f"cell {key}")
            else:
                held = try_claim(claim_path)
                if held is None:  # another process computes it now: come back to it at the end
                    deferred.add(index)
                    queue.append(index)
                    continue
            previous = store.latest().get(key)  # written by another process meanwhile?
            if previous is not None and previous.get("status") == "ok":
                held.release()
                held = None
        if previous is not None and previous.get("status") == "ok":
            progress_line.skipped(cell.config)
            log.info(
                "cell %s already done (%s %s eps=%.4g): skipped",
                key,
                cell.config.get("method"),
                cell.config.get("direction"),
                cell.config.get("eps", float("nan")),
            )
            rows[index] = previous
            continue
        start = time.perf_counter()
        # A model random at evaluation time (noise, dropout; see EOT) draws from torch's global generator:
        # seeded per cell from its key, so its numbers do not depend on the order cells run or resume in.
        torch.manual_seed(int(key, 16) % 2**63)
        try:
            desc = f"{cell.config.get('method')}-{cell.config.get('direction')}"
            adv = run_pass(
                model,
                tasks,
                batches(),
                attack=cell.attack,
                device=device,
                progress=progress,
                desc=desc,
                keep_example=example_dir is not None and example_count > 0,
                per_image=clean_per_image is not None,
            )
            if clean_per_image is not None and adv.per_image is not None:
                adv_file = save_stats(clean_per_image.parent / f"{key}.npz", adv.per_image, tasks)
                side = {"format": FORMAT_VERSION}
                side.update(
                    {
                        k: f"{p.parent.name}/{p.name}"
                        for k, p in (("clean", clean_per_image), ("adv", adv_file))
                    }
                )
            trivial = (row_extras or {}).get("trivial_baseline")
            results = summarize(clean, adv, tasks, time.perf_counter() - start, trivial)
            if clean_per_image is not None:
                results["per_image"] = side
            extra = getattr(cell.attack, "row_results", None)  # an ensemble cell: its rules and members
            if extra is not None:
                results.update(extra(clean))
            results.update(row_extras or {})
            if example_dir is not None:
                results["example"] = save_example(
                    example_dir / f"{key}.pt", model, adv, example_count, device
                )
            rows[index] = store.append(key, config, results)
        except Exception as err:  # noqa: BLE001 - recorded in the store; the sweep goes on
            error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=5)}"
            rows[index] = store.append(key, config, {}, status="failed", error=error)
            log.error("cell %s failed: %s", key, err)
            if not continue_on_error:
                raise
        finally:
            if held is not None:
                held.release()
        progress_line.computed(cell.config, rows[index], time.perf_counter() - start)
    return [rows[i] for i in range(len(cells))]


def format_rows(rows: Iterable[Mapping[str, Any]], tasks: Iterable[str]) -> str:
    """Per-task and average relative change (percent, negative = worse) of each cell, one line per cell."""
    tasks = list(tasks)
    head = f"{'method':<10} {'direction':<16} {'eps':>7} " + " ".join(f"{t:>9}" for t in tasks)
    lines = [head + f" {'average':>9}", "-" * (len(head) + 10)]
    for row in rows:
        cfg, res = row["config"], row.get("results", {})
        eps = format_pixels(cfg.get("eps", float("nan")), ".1f", norm=cfg.get("norm"))
        method = method_label(str(cfg.get("method", "?")), cfg.get("norm"))
        if row.get("status") != "ok":
            lines.append(
                f"{method:<10} {cfg.get('direction', '?'):<16} {eps:>7} FAILED: "
                f"{row.get('error', '').splitlines()[0] if row.get('error') else ''}"
            )
            continue

        def pct(v: Any) -> str:
            return f"{100 * v:>9.2f}" if isinstance(v, int | float) else f"{'nan':>9}"

        per_task = " ".join(pct(res["rel_task"].get(t)) for t in tasks)
        lines.append(f"{method:<10} {cfg['direction']:<16} {eps:>7} {per_task} {pct(res['rel_avg'])}")
    return "\n".join(lines)
