"""Results-store rows as typed records: `load_records` reads the latest row of every cell of one or more
stores into `Record`s, whose properties give the config fields the report uses with their types.

Real stores are messy: values may be null or NaN, cells may have failed, a cell may have been written
several times (the latest row wins, via `ResultsStore.latest()`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.values.budget import eps_slug, format_eps, pixel_key
from mtl_robust.values.norm import Norm, label_norm, method_label
from mtl_robust.values.recipe import LAYOUT_PREFIXES, TrainingRecipe, differing_settings, format_settings


def num(value: Any) -> float:
    """A stored number as float; null, strings and anything else non-numeric become NaN."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)  # "inf" / "-inf" as the store writes them
    except (TypeError, ValueError):
        return math.nan


def pct(value: Any) -> float:
    return 100.0 * num(value)


# ----------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Record:
    """The latest row of one cell of one store, with typed access to the config fields the report uses."""

    store: str
    key: str
    status: str
    time: float
    config: Mapping[str, Any]
    results: Mapping[str, Any]
    error: str
    base_dir: Path

    def text(self, name: str, default: str = "?") -> str:
        value = self.config.get(name)
        return default if value is None or value == "" else str(value)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def study(self) -> str:
        return self.text("study")

    @property
    def data(self) -> str:
        return self.text("data")

    @property
    def backbone(self) -> str:
        return self.text("backbone")

    @property
    def defense(self) -> str:
        """The defense's name, with the training settings that tell it apart where two recipes share the
        name in one report (`label_recipes`): `adv_train:pgd-total (defense.attack.eps=4/255)`."""
        label = self.config.get("recipe_label")
        return f"{self.defense_name} ({label})" if label else self.defense_name

    @property
    def defense_name(self) -> str:
        """The defense's name as the row stores it."""
        return self.text("defense", "none")

    @property
    def recipe(self) -> TrainingRecipe | None:
        """How the model was trained (seed left out); None for models without a recorded recipe."""
        return TrainingRecipe.from_row(self.config.get("recipe"))

    @property
    def method(self) -> str:
        """The attack as tables, curves and figures group and label it: the method, with its threat model
        unless L-inf ("pgd[l2]"), so rows of different norms never share a table."""
        return method_label(self.method_name, self.norm)

    @property
    def method_name(self) -> str:
        """The method alone ("pgd", "ensemble"), whatever the norm."""
        return self.text("method")

    @property
    def norm(self) -> str:
        """The threat model the row was attacked under: "linf" for rows without one (those written before
        norms existed, and every L-inf row since: the default stays out of rows and keys)."""
        try:
            return str(Norm.parse(self.config.get("norm")))
        except ValueError:
            return str(self.config.get("norm"))

    @property
    def direction(self) -> str:
        return self.text("direction")

    @property
    def layout_name(self) -> str:
        """The layout's name; layouts given explicitly (name "explicit") are told apart by their structure."""
        name = self.text("layout_name")
        if name in ("explicit", "?") and self.config.get("layout"):
            return str(self.config["layout"])
        return name

    @property
    def eps(self) -> float:
        return num(self.config.get("eps"))

    @property
    def eps_text(self) -> str:
        """The budget as tables print it under the row's norm: '8/255' (L-inf), '0.75' (an L2 radius)."""
        return format_eps(self.eps, self.norm)

    @property
    def eps_key(self) -> float:
        """The budget as a grouping key (pixel units, rounded): 8/255 written two ways groups as one."""
        return pixel_key(self.eps)

    @property
    def sharing_score(self) -> float:
        return num(self.config.get("sharing_score"))

    @property
    def is_attack(self) -> bool:
        return self.method not in ("none", "?")

    @property
    def tasks(self) -> list[str]:
        tasks = self.config.get("tasks")
        if isinstance(tasks, list) and tasks:
            return [str(t) for t in tasks]
        return list(self.results.get("rel_task") or self.results.get("clean") or {})

    def rel_task(self, task: str) -> float:
        return pct((self.results.get("rel_task") or {}).get(task))

    @property
    def rel_avg(self) -> float:
        return pct(self.results.get("rel_avg"))

    def clean_metrics(self) -> dict[str, dict[str, float]]:
        clean = self.results.get("clean") or {}
        return {t: {m: num(v) for m, v in (ms or {}).items()} for t, ms in clean.items()}


def attack_eps(eps: float, method: str) -> str:
    """The budget of an attack labelled `method` ('pgd', 'pgd[l2]') as tables print it: '8/255', '0.75'."""
    return format_eps(eps, label_norm(method))


def budget_label(eps: float, norm: str) -> str:
    """A budget with its threat model, for titles that name no method: 'ε=8/255' (L-inf, as before norms
    existed), 'L2 ε=0.75'."""
    try:
        parsed = Norm.parse(norm)
    except ValueError:  # a hand-edited row's norm: shown as written
        return f"{norm} ε={format_eps(eps, norm)}"
    prefix = "" if parsed.is_default else f"{parsed.label if parsed.share is None else parsed} "
    return f"{prefix}ε={format_eps(eps, norm)}"


def attack_eps_slug(eps: float, method: str) -> str:
    """The same for file names: 'eps8', 'eps0p75'."""
    return eps_slug(eps, label_norm(method))


def store_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique names for the stores: the file stem, with the parent folder added where stems clash."""
    stems = [Path(p).stem for p in paths]
    labels = []
    for path, stem in zip(paths, stems):
        label = stem if stems.count(stem) == 1 else f"{Path(path).parent.name}/{stem}"
        labels.append(label)
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return unique


def load_records(paths: Sequence[str | os.PathLike], studies: Sequence[str] | None = None) -> list[Record]:
    """Latest row of every cell of every store; `studies` keeps only rows whose config.study is listed."""
    if not paths:
        raise ValueError("no results store given: pass at least one --store PATH (a .jsonl file)")
    records: list[Record] = []
    for path, label in zip(paths, store_labels(paths)):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"results store {str(p)!r} does not exist or is not a file; pass the .jsonl file written by "
                "the attack evaluation (config `results_store`)"
            )
        for key, row in ResultsStore(p).latest().items():
            config = row.get("config") if isinstance(row.get("config"), Mapping) else {}
            results = row.get("results") if isinstance(row.get("results"), Mapping) else {}
            record = Record(
                store=label,
                key=str(key),
                status=str(row.get("status", "ok")),
                time=num(row.get("time")),
                config=config,
                results=results,
                error=str(row.get("error") or ""),
                base_dir=p.resolve().parent,
            )
            if studies and record.study not in studies:
                continue
            records.append(record)
    return label_recipes(records)


UNKNOWN_RECIPE = "recipe unknown"


def label_recipes(records: Sequence[Record]) -> list[Record]:
    """Records whose models share a defense name (in one store, data set and backbone) but were trained by
    different recipes get a `recipe_label`: the settings that differ among those recipes, layouts left
    out (every layout of one procedure gets the same label, so layout comparisons still pair). Without
    it, two PGD-AT models at eps 4/255 and 8/255 (both `adv_train:pgd-total`) would share one name."""
    by_name: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        by_name.setdefault((r.store, r.data, r.backbone, r.defense_name), []).append(i)
    labelled = list(records)
    for indices in by_name.values():
        recipes = {i: _without_layout(records[i].recipe) for i in indices}
        distinct = {None if r is None else r.fingerprint: r for r in recipes.values()}
        if len(distinct) < 2:
            continue
        known = [r for r in distinct.values() if r is not None]
        fields = differing_settings(known)
        for i, recipe in recipes.items():
            label = UNKNOWN_RECIPE if recipe is None else format_settings(recipe, fields)
            config = {**records[i].config, "recipe_label": label}
            labelled[i] = replace(records[i], config=config)
    return labelled


def _without_layout(recipe: TrainingRecipe | None) -> TrainingRecipe | None:
    return None if recipe is None else recipe.without(LAYOUT_PREFIXES)


@dataclass(frozen=True)
class Sources:
    """Which identity columns a report needs: `store` with several stores, `study` with several studies."""

    show_store: bool
    show_study: bool

    @classmethod
    def of(cls, records: Sequence[Record]) -> Sources:
        return cls(len({r.store for r in records}) > 1, len({r.study for r in records}) > 1)

    @property
    def columns(self) -> list[str]:
        return (["store"] if self.show_store else []) + (["study"] if self.show_study else [])

    def values(self, record: Record) -> list[str]:
        return ([record.store] if self.show_store else []) + ([record.study] if self.show_study else [])

    def label(self, record: Record) -> str:
        return " · ".join(self.values(record))


def latest_of(candidates: Sequence[Record], where: str, notes: list[str]) -> Record:
    """The latest row among several that land on the same table position; notes what distinguished them."""
    best = max(candidates, key=lambda r: num(r.time) if math.isfinite(num(r.time)) else -math.inf)
    if len(candidates) > 1:
        names = sorted({k for r in candidates for k in r.config})
        differing = [
            k
            for k in names
            if len({repr(r.config.get(k)) for r in candidates}) > 1 and k not in ("checkpoint",)
        ]
        notes.append(
            f"{where}: {len(candidates)} rows for the same position (they differ in "
            f"{', '.join(differing) or 'nothing but the key'}); the latest (key {best.key}) is shown"
        )
    return best
