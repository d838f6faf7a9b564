"""Attack rows grouped over seeds: cells that differ only by seed form one `Group`, with the per-image
statistics of those rows that have them, and each group's estimate (mean ± std over seeds, a 95 % CI from
the bootstrap over seeds and images, `evaluation/stats.py`, docs/statistics.md).

The statistics need torch: `evaluation.per_image` and `evaluation.stats` are imported where they are used,
so importing the report does not import torch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtl_robust.evaluation.relative import NEAR_ZERO_OF_TRIVIAL
from mtl_robust.report.flags import model_flags
from mtl_robust.report.records import Record, latest_of, num
from mtl_robust.values.recipe import TrainingRecipe

if TYPE_CHECKING:
    from mtl_robust.evaluation.per_image import Stats
    from mtl_robust.evaluation.stats import Bootstrap, Estimate, SeedCell
    from mtl_robust.tasks import Task


# Config fields that differ between the seeds of one cell, say where things are, or record what one training
# run measured about itself (its cost in passes and seconds): not part of a group. The training recipe is
# (as `recipe_id`, its hash; the settings themselves in `recipe` and the `recipe_label` derived from them
# only say it again): seeds pair only within one recipe.
# A transfer row's surrogate is told apart by its layout and defense; its model id changes with the seed.
SEED_FIELDS = (
    "seed",
    "train_seed",
    "model_id",
    "checkpoint",
    "deterministic",
    "training",
    "surrogate_id",
    "recipe",
    "recipe_label",
)


@dataclass
class Group:
    """The rows of one cell over seeds, with the per-image statistics of those that have them."""

    records: list[Record]
    cells: list[SeedCell]
    tasks: dict[str, Task] | None

    @property
    def first(self) -> Record:
        return self.records[0]

    def rel_avgs(self) -> list[float]:
        return [float(r.results["rel_avg"]) for r in self.records if _finite(r.results.get("rel_avg"))]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def row_seed(record: Record) -> int:
    """The seed a row stands for: its model's training seed (the run seed) where recorded."""
    value = record.config.get("train_seed", record.config.get("seed"))
    return int(value) if isinstance(value, int) else 0


def identity(record: Record) -> dict[str, Any]:
    """Everything that defines a row's cell except its seed: the group identity comparisons pair on."""
    return {k: v for k, v in record.config.items() if k not in SEED_FIELDS}


def identity_key(store: str, config: Mapping[str, Any]) -> tuple:
    return (store, repr(sorted(config.items(), key=lambda kv: kv[0])))


def identity_without(record: Record, fields: Sequence[str], recipe_prefixes: Sequence[str] = ()) -> tuple:
    """The record's identity with `fields` left out: records sharing it differ only in those fields. A
    comparison that swaps what a recipe holds (the defense, the layout) lets the recipe differ there and
    nowhere else: `recipe_id` is replaced by the hash of the recipe without the settings under
    `recipe_prefixes`."""
    config = {k: v for k, v in identity(record).items() if k not in fields}
    recipe = TrainingRecipe.from_row(record.config.get("recipe"))
    if recipe_prefixes and recipe is not None:
        config.pop("recipe_id", None)
        config["recipe_rest"] = recipe.without(recipe_prefixes).fingerprint
    return identity_key(record.store, config)


def group_key(record: Record) -> tuple:
    return identity_key(record.store, identity(record))


def seeds_of_position(candidates: Sequence[Record], where: str, notes: list[str]) -> list[Record]:
    """The rows shown at one table position: the seeds of one cell, in seed order (seeds are an axis, not
    a collision). Rows of different cells (other settings) at the same position are a collision: the latest
    cell is shown and a note says what distinguished them."""
    by_cell: dict[tuple, list[Record]] = defaultdict(list)
    for r in candidates:
        by_cell[group_key(r)].append(r)
    latest = [max(rs, key=_time) for rs in by_cell.values()]
    chosen = latest_of(latest, where, notes)
    by_seed = {row_seed(r): r for r in sorted(by_cell[group_key(chosen)], key=_time)}  # a rerun: the latest
    return [by_seed[s] for s in sorted(by_seed)]


def position_row(candidates: Sequence[Record], where: str, notes: list[str]) -> Record:
    """The one row a one-number-per-position table shows: the mean over the seeds of the position's cell."""
    return mean_over_seeds(seeds_of_position(candidates, where, notes))


def mean_over_seeds(seeds: Sequence[Record]) -> Record:
    """The rows of one cell's seeds as one record: every number in the results is the mean over the seeds
    that have it (finite values only); everything else is the latest seed's. The model's flags are the
    union over seeds, so a table marks the position when any seed's model is flagged."""
    latest = max(seeds, key=_time)
    if len(seeds) == 1:
        return latest
    results = _mean_tree([r.results for r in seeds], latest.results)
    flags = list(dict.fromkeys(f for r in seeds for f in model_flags(r)))
    results["diagnostics"] = {**(results.get("diagnostics") or {}), "flags": flags}
    return replace(latest, results=results)


def _mean_tree(values: Sequence[Any], latest: Any) -> Any:
    if isinstance(latest, Mapping):
        present = [v for v in values if isinstance(v, Mapping)]
        return {k: _mean_tree([v[k] for v in present if k in v], latest[k]) for k in latest}
    if isinstance(latest, bool) or not isinstance(latest, int | float):
        return latest
    finite = [num(v) for v in values if math.isfinite(num(v))]
    return sum(finite) / len(finite) if finite else latest


def _time(record: Record) -> float:
    return num(record.time) if math.isfinite(num(record.time)) else -math.inf


class StatsLoader:
    """Loads side files once each; failures become notes naming the file."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes
        self._cache: dict[Path, tuple[Stats, dict] | None] = {}

    def load(self, path: Path) -> tuple[Stats, dict] | None:
        from mtl_robust.evaluation.per_image import PerImageError, load_stats

        if path not in self._cache:
            try:
                self._cache[path] = load_stats(path)
            except PerImageError as err:
                self.notes.append(f"{err}; its cells have no confidence interval")
                self._cache[path] = None
        return self._cache[path]

    def cell(self, record: Record) -> tuple[SeedCell, dict[str, Task]] | None:
        from mtl_robust.evaluation.per_image import header_tasks
        from mtl_robust.evaluation.stats import SeedCell

        side = record.results.get("per_image") or {}
        if not side.get("clean") or not side.get("adv"):
            return None
        clean = self.load(record.base_dir / side["clean"])
        adv = self.load(record.base_dir / side["adv"])
        if clean is None or adv is None:
            return None
        (clean_stats, clean_header), (adv_stats, adv_header) = clean, adv
        image_set = clean_header.get("image_set") or record.config.get("data_id")
        excluded = frozenset(str(m) for m in record.results.get("rel_excluded") or ())
        cell = SeedCell(
            row_seed(record), clean_stats, adv_stats, None if image_set is None else str(image_set), excluded
        )
        return cell, header_tasks(adv_header)


def _model_text(record: Record) -> str:
    """The model a row evaluates, with the model its x_adv was crafted on when that is another one."""
    model, surrogate = record.text("model_id"), record.config.get("surrogate_id")
    return f"{model} (x_adv crafted on {surrogate})" if surrogate and surrogate != model else model


def seed_groups(records: Sequence[Record], notes: list[str]) -> list[Group]:
    """Successful attack rows grouped over seeds, each with its per-image statistics where available."""
    loader = StatsLoader(notes)
    grouped: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if r.ok and r.is_attack:
            grouped[group_key(r)].append(r)
    groups, without = [], 0
    for rows in grouped.values():
        by_seed: dict[int, Record] = {}
        for r in sorted(rows, key=lambda r: r.time):  # one row per seed: the latest
            if row_seed(r) in by_seed:
                notes.append(
                    f"cell {r.key}: several rows for seed {row_seed(r)} of the same cell (models "
                    f"{_model_text(by_seed[row_seed(r)])} and {_model_text(r)}); the latest counts"
                )
            by_seed[row_seed(r)] = r
        rows = [by_seed[seed] for seed in sorted(by_seed)]
        cells, tasks = [], None
        for r in rows:
            loaded = loader.cell(r)
            if loaded is None:
                without += 1
                continue
            cell, tasks = loaded
            cells.append(cell)
        groups.append(Group(rows, cells, tasks))
    for g in groups:
        if g.cells and len(g.cells) != len(g.records):
            notes.append(
                f"cell {g.first.key}: {len(g.records)} seeds have rows but {len(g.cells)} have per-image "
                "statistics: its mean, spread and CI are over those seeds only"
            )
    unknown = [g for g in groups if "recipe_id" not in g.first.config]
    if unknown and len(unknown) < len(groups):
        notes.append(
            f"{len(unknown)} cells come from models without a recorded training recipe (checkpoints trained "
            "before recipes were recorded, or models not trained here): their seeds are paired by seed "
            "number within one defense name, as before, and may pair models trained differently"
        )
    elif unknown:
        notes.append(
            "no model of these rows records its training recipe (checkpoints trained before recipes were "
            "recorded, or models not trained here): seeds are paired by seed number within one defense "
            "name, and models trained differently under one name are not told apart"
        )
    for g in groups:
        nonfinite = sorted({str(m) for r in g.records for m in r.results.get("rel_nonfinite") or ()})
        if nonfinite:
            notes.append(
                f"cell {g.first.key}: non-finite metric ({', '.join(nonfinite)}) under attack: its "
                "average is not computed (a failure, not a smaller average)"
            )
        excluded = sorted({str(m) for r in g.records for m in r.results.get("rel_excluded") or ()})
        if excluded:
            notes.append(
                f"cell {g.first.key}: {len(excluded)} metric(s) with a near-zero clean value ("
                f"{', '.join(excluded)}, below {100 * NEAR_ZERO_OF_TRIVIAL:g} % of the trivial predictor's) "
                "left out of its averages: a change divided by them is unbounded"
            )
    if without:
        notes.append(
            f"{without} attack rows have no readable per-image statistics (stores written before per-image "
            "files existed, or files missing): their groups show mean ± std over seeds without CIs"
        )
    return groups


def estimate(group: Group, bootstrap: Bootstrap) -> Estimate:
    """Mean ± std over the rows' own measures; the CI from the bootstrap where statistics exist."""
    from mtl_robust.evaluation.stats import Estimate

    values = group.rel_avgs()
    mean = float(np.mean(values)) if values else math.nan
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    if group.cells and group.tasks is not None:
        boot = bootstrap.estimate(group.cells, group.tasks)
        if len(group.cells) != len(group.records):
            return boot  # point and interval from the same seeds: those with per-image statistics
        return replace(boot, mean=mean, std=std, num_seeds=len(group.records))
    return Estimate(mean, std, math.nan, math.nan, len(group.records), 0)


def pm(est: Estimate) -> str:
    """ "-56.4 ± 2.1" in percent (std over seeds; just the mean with one seed)."""
    if not math.isfinite(est.mean):
        return "n/a"
    if not math.isfinite(est.std):
        return f"{100 * est.mean:.2f}"
    return f"{100 * est.mean:.2f} ± {100 * est.std:.2f}"


def ci(est: Estimate) -> str:
    if not (math.isfinite(est.low) and math.isfinite(est.high)):
        return "n/a"
    return f"[{100 * est.low:.2f}, {100 * est.high:.2f}]"


def group_mean(g: Group) -> float:
    """Mean of the group's measures over seeds (NaN without any)."""
    values = g.rel_avgs()
    return float(np.mean(values)) if values else math.nan


@dataclass
class Analysis:
    """Seed groups of a set of records with their estimates, computed once for tables and plots."""

    groups: list[Group]
    estimates: list[Estimate]
    bootstrap: Bootstrap
    notes: list[str]

    @classmethod
    def of(cls, records: Sequence[Record], replicates: int = 1000) -> Analysis:
        from mtl_robust.evaluation.stats import Bootstrap

        notes: list[str] = []
        groups = seed_groups(records, notes)
        bootstrap = Bootstrap(replicates)
        estimates = [estimate(g, bootstrap) for g in groups]
        for g, est in zip(groups, estimates):
            if est.failed_replicates:
                notes.append(
                    f"cell {g.first.key}: {est.failed_replicates} of {est.replicates} image draws could not "
                    "compute a metric of the full set (a clean value of 0 in the draw); its CI uses the rest"
                )
            if est.near_zero:
                notes.append(
                    f"cell {g.first.key}: near-zero clean denominator ({', '.join(est.near_zero)}): its "
                    "relative change swings with the image draw"
                )
        return cls(groups, estimates, bootstrap, notes)
