"""The attack direction as a value: `DirectionSpec` (a registered name plus an optional argument), parsed
and formatted here only, and the registry of how each direction looks in tables and figures.

Text form (what store rows, sweeps and the Python API use): `total`, `dgba`, `dgba:1e-06` (tau),
`single:seg` (the attacked task). Config form (the `direction` group): `{name: single, task: seg}`,
`{name: dgba, tau: 1e-06}`. A direction's argument at its default value is not written, so `dgba` with
the default tau stays `dgba` and existing stores keep their keys.

Target sets (docs/attacker_goals.md): a joint direction computed over a subset of the tasks is written
`dgba@seg+depth` (`dgba:1e-06@seg+depth` with an argument); config `{name: dgba, tasks: [seg, depth]}`,
on the command line `+direction.tasks=[seg,depth]` (`tasks` is no key of the group's files, so training
keys that hold a direction stay as they were). The set is written in `TASK_ORDER`, so one set has one text
form; no set (`dgba`) is all tasks, and a study drops a set equal to all of its tasks
(`DirectionSpec.over`), so it keeps today's text and key. SINGLE is the one-task case and keeps its own
form (`single:seg`); a set on it is refused. `@` and `+` need no quoting in a Hydra override
(`pipeline.directions=[dgba@seg+depth,total]`), unlike `{`, `[` and `,`.

The attack classes live in `mtl_robust.attacks.directions` (torch); this module is plain Python so that
reports can order, name and colour directions without importing torch. That is why the built-in
directions' styles are declared here (`_STYLES`), while their classes register with no style. A new
direction registers its `DirectionStyle` next to its class (`@register_direction(style)` in
`mtl_robust.attacks.directions`, the one place a new style comes from); a name nobody registered still
reports, under its own name, after the registered ones, in a palette colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# NYUv2 and Taskonomy in the paper's order; PASCAL-Context's extra tasks where its papers list them.
TASK_ORDER = ("seg", "human_parts", "saliency", "normal", "depth", "keypoints", "edges", "edge")

# Floor of a per-sample loss inside DGBA's log (and the relative directions' division); the default that a
# direction's text form leaves out.
DEFAULT_TAU = 1e-8


@dataclass(frozen=True)
class DirectionStyle:
    """How a direction reads in reports.

    Arguments:
        label: display name; `{arg}` is replaced by the spec's argument (`SINGLE({arg})`), `{name}` by its
            text form; a label with neither gets a non-default argument appended (`DGBA(tau=1e-06)`).
        colour: a matplotlib colour; None: the attacked task's colour (SINGLE) or a palette colour.
        order: rank in tables and legends (ties: by name).
        arg_key: the config key that holds the argument (`task` for single, `tau` for dgba).
        arg_default: the argument's default value, which the text form leaves out.
        arg_required: whether the direction cannot be built without its argument.
        linestyle, marker, linewidth: line look in figures.
        needs_targets: whether the direction is defined by its target set (STEALTH: the others are held),
            so a set equal to all tasks is kept rather than dropped.
    """

    label: str
    colour: str | None = None
    order: int = 100
    arg_key: str | None = None
    arg_default: Any = None
    arg_required: bool = False
    linestyle: str = ":"
    marker: str = "v"
    linewidth: float = 1.4
    needs_targets: bool = False


# The paper's directions first (SINGLE per task, TOTAL, DGBA), then its ablations.
_STYLES: dict[str, DirectionStyle] = {
    "single": DirectionStyle(
        "SINGLE({arg})", None, 0, arg_key="task", arg_required=True, linestyle="--", marker="o"
    ),
    "total": DirectionStyle("TOTAL", "black", 1, linestyle="-", marker="s", linewidth=1.6),
    "dgba": DirectionStyle(
        "DGBA", "tab:red", 2, arg_key="tau", arg_default=DEFAULT_TAU, linestyle="-", marker="D", linewidth=2.4
    ),
    "dgba_reference": DirectionStyle("{name}", None, 3, arg_key="tau", arg_default=DEFAULT_TAU),
    "minmax": DirectionStyle("{name}", None, 3, arg_key="tau", arg_default=DEFAULT_TAU),
    "sign_sum": DirectionStyle("{name}", None, 3),
    "static_relative": DirectionStyle("{name}", None, 3, arg_key="tau", arg_default=DEFAULT_TAU),
    # Raise the target set's relative loss, hold the other tasks within a budget (mtl_robust.attacks.stealth).
    "stealth": DirectionStyle(
        "STEALTH", "tab:purple", 4, arg_key="budget", arg_default=0.05, marker="P", needs_targets=True
    ),
    # TOTAL on the training weights (the model's, read by the attack job: no argument in its text form).
    "weighted": DirectionStyle("WEIGHTED", "tab:brown", 2, linestyle="-.", marker="^", linewidth=1.6),
}
_UNREGISTERED = DirectionStyle("{name}", None, 3)

# Separators of the target set in the text form: `name[:arg]@task+task`.
SET_MARK = "@"
SET_JOIN = "+"


def register_style(name: str, style: DirectionStyle) -> None:
    """Make a direction known to parsing and reports (re-registering the same name replaces its style)."""
    if not name or any(c in name for c in (":", SET_MARK, SET_JOIN)):
        raise ValueError(f"a direction name is a non-empty word without ':', '@' or '+', got {name!r}")
    _STYLES[name] = style


def style_of(name: str) -> DirectionStyle:
    return _STYLES.get(name, _UNREGISTERED)


def registered() -> list[str]:
    """Registered direction names, in report order."""
    return sorted(_STYLES, key=lambda n: (_STYLES[n].order, n))


def _numeric(style: DirectionStyle) -> bool:
    """Whether a direction's argument is a number (tau, or any argument with a float default): its text
    form is then `repr(float)`, so `dgba:1e-6` and `dgba:0.000001` are one spec."""
    return style.arg_key == "tau" or (
        isinstance(style.arg_default, float | int) and not isinstance(style.arg_default, bool)
    )


def task_order_key(task: str, tasks: Sequence[str] = TASK_ORDER) -> tuple[int, str]:
    """Tasks in the paper's order; tasks it does not list after them, by name."""
    return (list(tasks).index(task) if task in tasks else len(tasks), task)


def canonical_targets(targets: Any) -> tuple[str, ...] | None:
    """A target set as given (a list, a tuple or `seg+depth`; None: no set) -> its tasks, each once, in
    `TASK_ORDER`. An empty set is refused: a direction over no task has no ascent."""
    if targets is None:
        return None
    if isinstance(targets, str):
        targets = [t for t in targets.split(SET_JOIN)] if targets.strip() else []
    items = [str(t).strip() for t in targets]
    if not items:
        raise ValueError("a target set needs at least one task, e.g. +direction.tasks=[seg,depth]")
    for task in items:
        if not task or any(c in task for c in (":", SET_MARK, SET_JOIN, ",")):
            raise ValueError(f"target set {items}: {task!r} is no task name")
    return tuple(sorted(set(items), key=task_order_key))


@dataclass(frozen=True, order=False)
class DirectionSpec:
    """A direction: its registered name and its argument as text (`None` when absent or default).

    Example::

        DirectionSpec.parse("single:seg").task                  # 'seg'
        str(DirectionSpec.from_config({"name": "dgba"}))        # 'dgba'
        DirectionSpec.parse("dgba:1e-06").label                 # 'DGBA'
        DirectionSpec.parse("dgba@depth+seg").targets           # ('seg', 'depth')
    """

    name: str
    arg: str | None = field(default=None)
    # The tasks a joint direction is computed over; None: all tasks the model has.
    targets: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in (":", SET_MARK)):
            raise ValueError(f"a direction name is a non-empty word without ':' or '@', got {self.name!r}")
        object.__setattr__(self, "targets", canonical_targets(self.targets))
        style = style_of(self.name)
        if self.targets is not None and style.arg_key == "task":
            raise ValueError(
                f"the {self.name} direction attacks one task (its own target set): write "
                f"'{self.name}:<task>', or a target set on a joint direction, e.g. 'dgba@seg+depth'"
            )
        if style.arg_required and not self.arg:
            raise ValueError(
                f"the {self.name} direction needs its {style.arg_key}: '{self.name}:<{style.arg_key}>', "
                f"e.g. direction={self.name} direction.{style.arg_key}=seg"
            )

    # ------------------------------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, value: str | DirectionSpec | Mapping[str, Any]) -> DirectionSpec:
        """From the text form ("single:seg"), a config mapping, or a spec (returned unchanged)."""
        if isinstance(value, DirectionSpec):
            return value
        if isinstance(value, Mapping):
            return cls.from_config(value)
        if not isinstance(value, str):
            raise TypeError(f"a direction is written as text like 'dgba' or 'single:seg', got {value!r}")
        head, mark, targets = value.strip().partition(SET_MARK)
        if mark and not targets.strip():
            raise ValueError(
                f"direction {value!r}: an empty target set after '@'; write e.g. 'dgba@seg+depth'"
            )
        name, sep, arg = head.partition(":")
        if sep and not arg:
            raise ValueError(f"direction {value!r}: nothing after ':'")
        return cls(name, cls._canonical_arg(name, arg or None), targets if mark else None)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str) -> DirectionSpec:
        """From the `direction` config group: `{name: single, task: seg}`, `{name: dgba, tasks: [seg,
        depth]}`; other keys are ignored, except the direction's own argument (`task`, `tau`) and its target
        set (`tasks`; null: all tasks)."""
        if isinstance(config, str):
            return cls.parse(config)
        name = config.get("name")
        if not name:
            raise ValueError(f"a direction config needs a name, got {dict(config)}")
        name = str(name)
        if ":" in name or SET_MARK in name:  # a text form given as the name
            return cls.parse(name)
        key = style_of(name).arg_key
        arg = config.get(key) if key else None
        targets = config.get("tasks")
        if targets is not None and not isinstance(targets, str | Sequence):
            targets = list(targets)  # an omegaconf ListConfig
        return cls(name, cls._canonical_arg(name, arg), targets)

    @staticmethod
    def _canonical_arg(name: str, arg: Any) -> str | None:
        style = style_of(name)
        if arg is None or arg == "":
            return None
        if _numeric(style):
            value = float(arg)
            return None if style.arg_default is not None and value == style.arg_default else repr(value)
        return str(arg)

    # ----------------------------------------------------------------------------------------- reading
    def __str__(self) -> str:
        text = self.name if self.arg is None else f"{self.name}:{self.arg}"
        return text if self.targets is None else f"{text}{SET_MARK}{SET_JOIN.join(self.targets)}"

    def over(self, tasks: Sequence[str]) -> DirectionSpec:
        """This spec for a model with `tasks`: a target set naming a task the model lacks is refused, and one
        equal to all its tasks is dropped (the direction over all tasks keeps its text form and key)."""
        if self.targets is None:
            return self
        unknown = [t for t in self.targets if t not in tasks]
        if unknown:
            raise ValueError(
                f"direction {str(self)!r}: unknown target task(s) {unknown}; the tasks are {list(tasks)}"
            )
        if set(self.targets) == set(tasks) and not self.style.needs_targets:
            return DirectionSpec(self.name, self.arg)
        return self

    @property
    def task(self) -> str | None:
        """The attacked task of a per-task direction (SINGLE), else None."""
        return self.arg if style_of(self.name).arg_key == "task" else None

    @property
    def per_task(self) -> bool:
        """Whether the direction attacks one named task (so a study expands it to one cell per task)."""
        return style_of(self.name).arg_key == "task"

    def kwargs(self) -> dict[str, Any]:
        """The constructor arguments of the direction's class."""
        key = style_of(self.name).arg_key
        if self.arg is None or key is None:
            return {}
        return {key: float(self.arg) if _numeric(style_of(self.name)) else self.arg}

    @property
    def label(self) -> str:
        style = style_of(self.name)
        text = style.label.format(arg=self.arg or "", name=str(self))
        if self.arg is not None and "{arg}" not in style.label and "{name}" not in style.label:
            text += f"({style.arg_key or 'arg'}={self.arg})"
        if self.targets is not None and "{name}" not in style.label:
            text += " on {" + ", ".join(self.targets) + "}"
        return text

    @property
    def style(self) -> DirectionStyle:
        return style_of(self.name)

    def sort_key(self, tasks: Sequence[str] = TASK_ORDER) -> tuple[int, int, str]:
        """Registered order; per-task directions by task order; then by name; names nobody registered
        after all registered ones."""
        style = style_of(self.name)
        order = style.order if self.name in _STYLES else max(s.order for s in _STYLES.values()) + 1
        if self.per_task:
            task = self.arg or ""
            return (order, list(tasks).index(task) if task in tasks else len(tasks), task)
        if self.targets is not None:  # the direction over all tasks first, then its sets, smallest first
            return (order, len(self.targets), str(self))
        return (order, 0, str(self))


def unbound_per_task(choice: str | DirectionSpec) -> bool:
    """Whether a direction choice is a per-task name without its task (`single`), which stands for one
    spec per task."""
    return isinstance(choice, str) and ":" not in choice and style_of(choice.strip()).arg_key == "task"


def expand_per_task(names: Sequence[str | DirectionSpec], tasks: Sequence[str]) -> list[DirectionSpec]:
    """Direction choices of a study -> specs: a per-task name without its argument (`single`) becomes
    one spec per task, in the given task order; a target set is checked against `tasks` and dropped when it
    is all of them (`DirectionSpec.over`)."""
    out: list[DirectionSpec] = []
    for item in names:
        if unbound_per_task(item):
            out.extend(DirectionSpec(item.strip(), t) for t in tasks)
        else:
            out.append(DirectionSpec.parse(item).over(tasks))
    return out
